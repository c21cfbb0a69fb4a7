"""Write a model folder (docs/design.md §2) from diffusers components: graphs, tokenizer and the nti.json manifest."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .manifest_schema import check_manifest
from .peak_memory import peak_rss_bytes
from . import grad_graph, graphs, onnx_io
from .configs import Components
from .precision import DEFAULT_GRAD_PRECISION, convert_precision, graph_precision
from .tokenizer import describe as describe_tokenizer
from .tokenizer import load_tokenizer

FORMAT = "nti-model"
# Version 2: the three UNet graphs live in unet/ and keep their weights once, in unet/weights.bin (version 1
# had unet_control and null_text_grad in nti/, each with its own copy). The engine reads both.
FORMAT_VERSION = 2

# Manifest key -> file in the folder. The first five follow the diffusers/Optimum ONNX layout.
GRAPH_FILES = {
    "text_encoder": "text_encoder/model.onnx",
    "vae_encoder": "vae_encoder/model.onnx",
    "vae_decoder": "vae_decoder/model.onnx",
    "unet": "unet/model.onnx",
    "unet_control": "unet/control.onnx",
    "null_text_grad": "unet/null_text_grad.onnx",
}
#: the graphs that share one weights file, and that file (beside them: the runtime refuses data outside a
#: graph's folder)
SHARED_WEIGHTS = ("unet", "unet_control", "null_text_grad")
WEIGHTS_FILE = "weights.bin"
SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "clip_sample",
                  "set_alpha_to_one", "steps_offset", "prediction_type", "timestep_spacing")


class Progress:
    """One line per stage, with its time, on stderr."""

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.done, self.quiet = total, 0, quiet
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        #: the process's peak resident memory at the end of each stage, which says which stage set it
        self.peaks: dict[str, int] = {}

    def stage(self, name: str):
        progress = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()
                if not progress.quiet:
                    print(f"[{progress.done + 1}/{progress.total}] {name} ...", file=sys.stderr, flush=True)

            def __exit__(self, exc_type, exc, tb):
                dt = time.perf_counter() - self.t0
                progress.done += 1
                progress.timings[name] = round(dt, 2)
                peak = peak_rss_bytes()
                if peak is not None:
                    progress.peaks[name] = peak
                if exc is None and not progress.quiet:
                    memory = f", peak memory so far {peak / 2**30:.1f} GiB" if peak is not None else ""
                    print(f"[{progress.done}/{progress.total}] {name} done in {dt:.1f}s{memory}", file=sys.stderr,
                          flush=True)

        return _Stage()


def _latent_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def export_components(c: Components, out: Path, *, opset: int = 18, fp16: bool = False,
                      grad_precision: str = DEFAULT_GRAD_PRECISION, skip_grad: bool = False, force: bool = False,
                      quiet: bool = False) -> dict[str, Any]:
    """Export everything into `out` atomically: built in a sibling temp folder, renamed at the end."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise SystemExit(f"{out} exists and is not empty (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    try:
        manifest = _export_into(c, work, opset=opset, fp16=fp16, grad_precision=grad_precision, skip_grad=skip_grad,
                                quiet=quiet)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _export_into(c: Components, out: Path, *, opset: int, fp16: bool, grad_precision: str, skip_grad: bool,
                 quiet: bool) -> dict:
    unet, vae, text_encoder = c.unet, c.vae, c.text_encoder
    for m in (unet, vae, text_encoder):
        m.eval().requires_grad_(False)
        if m.dtype != torch.float32:
            m.to(torch.float32)
    prediction_type = c.scheduler_config.get("prediction_type", "epsilon")
    specs = graphs.graph_specs(c, c.image_size)
    n_stages = 1 + len(specs) + 1 + (0 if skip_grad else 1) + (1 if fp16 else 0) + 1 + 1
    progress = Progress(n_stages, quiet)

    with progress.stage("tokenizer"):
        (out / "tokenizer").mkdir(parents=True)
        c.tokenizer.save(str(out / "tokenizer" / "tokenizer.json"))
    for spec in specs:
        with progress.stage(spec.name):
            onnx_io.export_module(spec.module, spec.inputs, out / spec.name, spec.input_names, spec.output_names,
                                  spec.dynamic_axes, opset=opset)
    with progress.stage(GRAPH_FILES["unet_control"]):
        control = graphs.control_spec(unet)
        onnx_io.export_module(control.module, control.inputs, out / control.name, control.input_names,
                              control.output_names, control.dynamic_axes, opset=opset)
    if not skip_grad:
        with progress.stage(GRAPH_FILES["null_text_grad"]):
            grad_graph.export(unet, prediction_type, out / GRAPH_FILES["null_text_grad"], opset=opset)
    if fp16:
        with progress.stage("fp16 conversion"):
            for key, rel in GRAPH_FILES.items():
                if (out / rel).exists() and graph_precision(key, fp16, grad_precision) != "float32":
                    convert_precision(out / rel, graph_precision(key, fp16, grad_precision))

    with progress.stage(f"one copy of the UNet weights (unet/{WEIGHTS_FILE})"):
        shared = [Path(GRAPH_FILES[k]).name for k in SHARED_WEIGHTS if (out / GRAPH_FILES[k]).exists()]
        sharing = onnx_io.share_external_data(out / "unet", shared, WEIGHTS_FILE)
    with progress.stage("nti.json"):
        module = control.module
        manifest = build_manifest(c, out, prediction_type=prediction_type, opset=opset, fp16=fp16,
                                  grad_precision=grad_precision,
                                  map_resolution=module.map_resolution, map_layers=module.map_layers,
                                  self_injected_layers=module.self_injected_layers,
                                  timings=progress.timings)
        check_manifest(manifest)  # the schema the engine reads it with
        tmp = out / "nti.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.rename(out / "nti.json")
    manifest["export_seconds"] = round(time.perf_counter() - progress.started, 1)
    manifest["stage_peak_bytes"] = progress.peaks  # for --json, not in nti.json
    manifest["unet_weight_bytes"] = sharing  # held by the graphs / written once (for --json, not in nti.json)
    return manifest


def model_family(c: Components) -> str:
    """How prompts condition the UNet (src/core/families.ts). SD 2.x's UNets, and no SD 1.x one, project in and
    out of their transformer blocks with linear layers; that marks the family at any width (its OpenCLIP states
    are 1024 wide at full size, 32 in the tiny test config)."""
    return "sd2" if getattr(c.unet.config, "use_linear_projection", False) else "sd1"


def build_manifest(c: Components, out: Path, *, prediction_type: str, opset: int, fp16: bool, grad_precision: str,
                   map_resolution: int, map_layers: int, self_injected_layers: int,
                   timings: dict[str, float]) -> dict:
    import diffusers
    import onnx

    vae = c.vae
    factor = _latent_factor(vae)
    graphs_entry = {}
    files = {}
    for key, rel in GRAPH_FILES.items():
        path = out / rel
        if not path.exists():
            continue
        io = onnx_io.describe_graph(path)
        data = path.with_name(WEIGHTS_FILE if key in SHARED_WEIGHTS else path.name + ".data")
        graphs_entry[key] = {
            "file": rel,
            "external_data": data.name if data.exists() else None,
            "precision": graph_precision(key, fp16, grad_precision),
            **io,
        }
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "nti.json.tmp"):
        rel = path.relative_to(out).as_posix()
        files[rel] = {"sha256": onnx_io.sha256(path), "bytes": path.stat().st_size}
    sched = {k: c.scheduler_config.get(k) for k in SCHEDULER_KEYS if k in c.scheduler_config}
    sched["prediction_type"] = prediction_type
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": c.model_name,
        "family": model_family(c),
        "source": c.source,
        "licence": c.licence,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "exporter": {"torch": torch.__version__, "diffusers": diffusers.__version__, "onnx": onnx.__version__,
                     "opset": opset, "fp16": fp16, "stage_seconds": timings},
        "prediction_type": prediction_type,
        "image_size": c.image_size,
        "latent_channels": vae.config.latent_channels,
        "latent_factor": factor,
        "latent_size": c.image_size // factor,
        "vae_scaling_factor": float(vae.config.scaling_factor),
        "vae_shift_factor": getattr(vae.config, "shift_factor", None),
        "scheduler": sched,
        "defaults": {"inference_steps": 50, "guidance_scale": 7.5, "inner_steps": 10},
        "tokenizer": describe_tokenizer(c.tokenizer),
        "text_hidden_size": int(c.unet.config.cross_attention_dim),
        "attention": {
            "map_resolution": map_resolution,
            "map_layers": map_layers,
            "self_injection_layers": self_injected_layers,
            "tokens": graphs.TOKENS,
        },
        "graphs": graphs_entry,
        "files": files,
    }


# ---- loading a diffusers model ----------------------------------------------------------------------

def _licence_from_card(folder: Path) -> str | None:
    readme = folder / "README.md"
    if not readme.exists():
        return None
    m = re.search(r"^licen[cs]e:\s*(.+)$", readme.read_text(errors="replace"), flags=re.MULTILINE)
    return m.group(1).strip() if m else None


def load_diffusers(source: str) -> Components:
    """A local diffusers folder, or a hub id (needs network; resolved with huggingface_hub)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(source)
    if not folder.exists():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(source, allow_patterns=[
                "model_index.json", "README.md", "unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"],
                ignore_patterns=["*.bin", "*.ckpt", "*fp16*", "*.msgpack", "*.onnx*"]))
        except Exception as e:  # offline, unknown id, gated model
            raise SystemExit(f"{source}: not a local folder, and the hub download failed: {e}") from None
    missing = [d for d in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (folder / d).is_dir()]
    if missing:
        raise SystemExit(f"{folder}: not a diffusers pipeline folder, missing: {', '.join(missing)}")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=torch.float32)
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    sched.setdefault("prediction_type", "epsilon")
    sample = unet.config.sample_size
    sample = sample if isinstance(sample, int) else sample[0]
    image_size = sample * _latent_factor(vae)
    name = folder.name if Path(source).exists() else source.replace("/", "--")
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=load_tokenizer(folder / "tokenizer"),
                      scheduler_config=sched, image_size=image_size, source=str(source),
                      licence=_licence_from_card(folder) or "unknown: see the source model's card",
                      model_name=name)
