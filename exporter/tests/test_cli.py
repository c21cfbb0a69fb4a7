"""The exporter's command line: diffusers folders, flags, errors; full-size architectures (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporter.__main__ import main
from exporter.configs import save_diffusers
from exporter.timing import time_model

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def save_diffusers_folder(components, folder: Path) -> None:
    save_diffusers(components, folder, {"test": True})
    (folder / "README.md").write_text("---\nlicense: creativeml-openrail-m\n---\n# test model\n")


def test_export_from_a_local_diffusers_folder(tmp_path, tiny):
    src = tmp_path / "pipeline"
    save_diffusers_folder(tiny, src)
    out = tmp_path / "model"
    assert main(["export", "--from", str(src), "--out", str(out), "--skip-grad", "--quiet"]) == 0
    manifest = json.loads((out / "nti.json").read_text())
    assert manifest["licence"] == "creativeml-openrail-m"
    assert manifest["image_size"] == 64 and manifest["source"] == str(src)
    assert "null_text_grad" not in manifest["graphs"]
    assert not (out / "nti" / "null_text_grad.onnx").exists()
    timing = time_model(out, repeats=1)
    assert timing["unet_batch1_s"] > 0 and timing["unet_control_s"] > 0


def test_time_with_the_reference_times_both_sides_on_the_same_random_weights(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["random", "--config", "tiny", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["time", "--model", str(out), "--repeats", "1", "--reference-config", "tiny"]) == 0
    timing = json.loads(capsys.readouterr().out)
    for key in ("unet_batch1_s", "null_text_grad_s", "reference_unet_batch1_s", "reference_null_text_grad_s"):
        assert timing[key] > 0, key
    assert timing["engine_speedup_gradient"] == round(timing["reference_null_text_grad_s"] / timing["null_text_grad_s"], 2)


def test_reference_invert_command_does_the_whole_job_and_counts_its_passes(tmp_path, tiny):
    """`python -m exporter.invert` (the benchmarks' PyTorch side) on a saved diffusers folder."""
    from PIL import Image

    from exporter import invert

    src = tmp_path / "pipeline"
    save_diffusers_folder(tiny, src)
    image = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(image)
    save = tmp_path / "rec.png"
    from exporter.reference import Settings

    for loop, extra in (("notebook", 2), ("lean", 0)):
        r = invert.run(src, image, "a red circle on a white background", Settings(steps=4, inner_steps=2, inner_loop=loop), save=save)
        # pivots 4 + per step (cond 1 + gradients + the notebook's batch-2 pass) + two batch-2 samplings
        assert r["unetForward"] == 4 + 4 + r["innerIterations"] + 4 * extra + 2 * 2 * 4
        assert r["unetBackward"] == r["innerIterations"] and r["seconds"] > 0 and r["peakRssMb"] > 0
        assert np.isfinite(r["psnr"]) and save.exists()
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(small)
    with pytest.raises(SystemExit, match="the model wants 64x64"):
        invert.run(src, small, "a red circle", Settings(steps=2))


def test_fp16_keeps_the_vae_in_float32_shares_one_weights_copy_and_stays_close(tmp_path, tiny_folder):
    from exporter import grad_graph
    from exporter.configs import build_random
    from exporter.grad_precision import compare

    out = tmp_path / "fp16"
    assert main(["random", "--config", "tiny", "--out", str(out), "--fp16", "--quiet"]) == 0
    manifest = json.loads((out / "nti.json").read_text())
    precision = {k: g["precision"] for k, g in manifest["graphs"].items()}
    assert precision == {"text_encoder": "float16", "vae_encoder": "float32", "vae_decoder": "float32",
                         "unet": "float16", "unet_control": "float16", "null_text_grad": "float16-weights"}
    assert manifest["graphs"]["unet"]["inputs"][0]["dtype"] == "float32"  # I/O stays float32
    # the gradient graph reads the float16 UNet's own weights: as much of it is shared as in float32 (the rest
    # is the backward's own constants)
    def shared_share(folder: Path) -> float:
        def stored(graph: str) -> dict[int, int]:
            model = onnx.load(str(folder / "unet" / graph), load_external_data=False)
            entries = [{e.key: e.value for e in t.external_data} for t in model.graph.initializer if t.external_data]
            return {int(e["offset"]): int(e["length"]) for e in entries}

        unet, grad = stored("model.onnx"), stored("null_text_grad.onnx")
        return sum(n for offset, n in grad.items() if offset in unet) / sum(grad.values())

    assert shared_share(out) >= shared_share(tiny_folder) - 0.01 > 0.5

    rng = np.random.default_rng(0)
    feeds = {"sample": rng.standard_normal((2, 4, 16, 16)).astype(np.float32), "timestep": np.array([300]),
             "encoder_hidden_states": rng.standard_normal((2, 77, 32)).astype(np.float32)}
    full = ort.InferenceSession(str(tiny_folder / "unet" / "model.onnx")).run(None, feeds)[0]
    half = ort.InferenceSession(str(out / "unet" / "model.onnx")).run(None, feeds)[0]
    rel = np.abs(half - full).max() / np.abs(full).max()
    print(f"fp16 UNet relative error {rel:.2e}")
    assert rel < 2e-2

    inputs = grad_graph.example_inputs(build_random("tiny", seed=0).unet)
    grad_feeds = {n: x.numpy() for n, x in zip(grad_graph.GRAD_INPUTS, inputs)}
    want = ort.InferenceSession(str(tiny_folder / "unet" / "null_text_grad.onnx")).run(None, grad_feeds)
    got = ort.InferenceSession(str(out / "unet" / "null_text_grad.onnx")).run(None, grad_feeds)
    err = compare(want, got)
    print(f"float16-weights gradient against float32: {err}")
    # float16 weights, float32 arithmetic: only the weights' rounding (2^-11) moves the gradient
    assert err["grad_cosine"] > 0.999 and err["grad_rel_err"] < 2e-2 and err["loss_rel_err"] < 1e-2


def test_bad_input_gives_one_clear_line(tmp_path):
    r = run_cli("export", "--from", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "not a local folder" in r.stderr
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    r = run_cli("export", "--from", str(tmp_path / "half"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "missing: vae, text_encoder, tokenizer, scheduler" in r.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    r = run_cli("random", "--config", "tiny", "--out", str(tmp_path / "taken"), "--skip-grad")
    assert r.returncode != 0 and "--force" in r.stderr
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
    r = run_cli("random", "--config", "nope", "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "invalid choice" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("config,prediction", [("sd15", "epsilon"), ("sd21", "v_prediction")])
def test_full_size_architecture_exports_and_loads(tmp_path, config, prediction):
    out = tmp_path / config
    t0 = time.perf_counter()
    r = run_cli("random", "--config", config, "--out", str(out), "--json", timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    print(f"{config}: export {time.perf_counter() - t0:.0f}s, {summary['bytes'] / 1e9:.2f} GB, "
          f"peak {summary['peak_rss_mb']} MB")
    manifest = json.loads((out / "nti.json").read_text())
    assert manifest["prediction_type"] == prediction
    assert manifest["graphs"]["unet"]["external_data"] == "weights.bin"  # format 2: one copy for the UNet graphs
    assert manifest["attention"]["map_resolution"] == 16
    timing = time_model(out, repeats=1, graphs=("unet", "unet_control"), batches=(1,))
    print(config, timing)
