"""How precise the null-text gradient graph is in each precision the exporter can write, against float32.

    python -m exporter.grad_precision --onnx <model folder (float32)> --diffusers <its diffusers folder>

Realistic feeds: the image (a generated scene, or --image) is encoded and inverted with the float32
reference (pivots), and at several timesteps of the 50-step schedule the graph gets what the engine gives it
there: the pivot, the empty prompt's embedding as the null embedding, the conditional noise, the next pivot as
the target, w = 7.5. Each variant of the float32 graph in the folder runs the same feeds on the CPU:
- float16: the whole graph converted (fp16 weights and activations, float32 I/O);
- float16-weights: fp16 weights cast up to float32 as they are read, float32 arithmetic (shares the fp16
  UNet's weights on disk);
and the loss, the gradient (relative norm of the difference, cosine) and the next latent are compared.
Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from . import export as E
from . import precision as P
from .grad_graph import GRAD_INPUTS
from .onnx_io import save_model
from .reference import Reference, Settings


def variants(grad_path: Path, work: Path) -> dict[str, Path]:
    out = {"float32": grad_path}
    for name in P.GRAD_PRECISIONS:
        if name == "float32":
            continue
        path = work / name / "null_text_grad.onnx"
        path.parent.mkdir(parents=True)
        save_model(onnx.load(str(grad_path), load_external_data=True), path)
        P.convert_precision(path, name)
        out[name] = path
    return out


def feeds_at(ref: Reference, image: np.ndarray, prompt: str, steps: list[int]) -> list[dict[str, np.ndarray]]:
    z0 = ref.image_to_latent(image)
    cond, uncond = ref.encode_prompts([prompt]), ref.encode_prompts([""])
    pivots = ref.ddim_inversion(z0, cond)
    out = []
    for i in steps:
        t = ref.timesteps[i]
        latent, target = pivots[len(pivots) - 1 - i], pivots[len(pivots) - 2 - i]
        with torch.no_grad():
            cond_noise = ref.unet_out(latent, t, cond)
        values = [latent, np.array([t], np.int64), uncond, cond_noise, target, np.array([7.5], np.float32),
                  ref.alpha(t).reshape(1), ref.alpha(t - ref.step_size).reshape(1)]
        out.append({n: (v if isinstance(v, np.ndarray) else v.detach().cpu().numpy().astype(np.float32))
                    for n, v in zip(GRAD_INPUTS, values)})
    return out


def compare(want: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    (l0, g0, p0, _), (l1, g1, p1, _) = want, got
    g0, g1 = g0.ravel().astype(np.float64), g1.ravel().astype(np.float64)
    return {
        "loss": float(l0[0]),
        "loss_rel_err": float(abs(l1[0] - l0[0]) / max(abs(l0[0]), 1e-20)),
        "grad_rel_err": float(np.linalg.norm(g1 - g0) / max(np.linalg.norm(g0), 1e-30)),
        "grad_cosine": float(g0 @ g1 / max(np.linalg.norm(g0) * np.linalg.norm(g1), 1e-30)),
        "latent_rel_err": float(np.abs(p1 - p0).max() / max(np.abs(p0).max(), 1e-20)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", required=True, type=Path)
    ap.add_argument("--diffusers", required=True, type=Path)
    ap.add_argument("--image", type=Path, default=None)
    ap.add_argument("--prompt", default="a red circle and a blue square on a white background")
    ap.add_argument("--steps", default="0,10,25,40,49", help="indices into the 50-step schedule")
    a = ap.parse_args(argv)

    c = E.load_diffusers(str(a.diffusers))
    ref = Reference(c, Settings(steps=50))
    size = c.image_size
    if a.image:
        from PIL import Image

        image = np.asarray(Image.open(a.image).convert("RGB").resize((size, size)))
    else:
        from .shapes import scenes as S

        scene = S.split_scenes("heldout", 1, seed=3, size=size)[0]
        image, a.prompt = S.render(scene), S.prompt_for(scene)
    steps = [int(s) for s in a.steps.split(",")]
    feeds = feeds_at(ref, image, a.prompt, steps)
    result: dict = {"model": str(a.onnx), "prompt": a.prompt, "steps": steps, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = variants(a.onnx / E.GRAPH_FILES["null_text_grad"], Path(tmp))
        sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in paths.items()}
        base = [sessions["float32"].run(None, f) for f in feeds]
        for name, sess in sessions.items():
            if name == "float32":
                continue
            rows = [compare(b, sess.run(None, f)) for b, f in zip(base, feeds)]
            result["variants"][name] = {
                "per_step": rows,
                "worst_grad_rel_err": max(r["grad_rel_err"] for r in rows),
                "worst_grad_cosine": min(r["grad_cosine"] for r in rows),
                "worst_loss_rel_err": max(r["loss_rel_err"] for r in rows),
            }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
