"""`python -m exporter time --model DIR`: onnxruntime CPU time of the graphs that the inversion repeats.

Loads each graph, checks its inputs/outputs against nti.json, and times one UNet forward (batch 1 and the
batch 2 of classifier-free guidance), one null-text gradient call and one control-UNet call (K = 2), as
the median of --repeats runs after a warm-up run.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .peak_memory import peak_rss_bytes


def _feeds(entry: dict, rng: np.random.Generator, k: int = 2) -> dict[str, np.ndarray]:
    sizes = {"batch": 2 * k, "edits": k - 1, "prompts": k}
    feeds = {}
    for i in entry["inputs"]:
        shape = [d if isinstance(d, int) else sizes[d] for d in i["shape"]]
        name = i["name"]
        if i["dtype"] == "int64":
            feeds[name] = np.full(shape, 500, dtype=np.int64)
        elif name in ("guidance",):
            feeds[name] = np.full(shape, 7.5, np.float32)
        elif name in ("alpha_t", "alpha_prev"):
            feeds[name] = np.full(shape, 0.3 if name == "alpha_t" else 0.32, np.float32)
        elif name in ("mapper",):
            feeds[name] = np.tile(np.eye(shape[-1], dtype=np.float32), (shape[0], 1, 1))
        elif name in ("alphas", "reweight", "cross_flag", "self_flag"):
            feeds[name] = np.ones(shape, np.float32)
        else:
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _median_seconds(call, repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call (allocations, pre-packing)."""
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 4)


def time_model(folder: Path, repeats: int = 3, threads: int = 0, graphs=("unet", "null_text_grad", "unet_control"),
               batches=(1, 2)) -> dict:
    manifest = json.loads((folder / "nti.json").read_text())
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    rng = np.random.default_rng(0)
    out: dict = {"model": manifest["name"], "latent_size": manifest["latent_size"], "threads": threads or "default"}
    for key in graphs:
        entry = manifest["graphs"].get(key)
        if entry is None:
            continue
        t0 = time.perf_counter()
        sess = ort.InferenceSession(str(folder / entry["file"]), opts, providers=["CPUExecutionProvider"])
        out[f"{key}_load_s"] = round(time.perf_counter() - t0, 2)
        names = [i.name for i in sess.get_inputs()]
        if names != [i["name"] for i in entry["inputs"]]:
            raise SystemExit(f"{entry['file']}: inputs {names} differ from nti.json")
        runs = [("", 2)] if key != "unet" else [(f"_batch{b}", b) for b in batches]
        for suffix, k in runs:
            if key == "unet":  # batch k of one sample, as classifier-free guidance feeds it
                feeds = {n: (np.repeat(v[:1], k, axis=0) if v.ndim > 1 else v) for n, v in _feeds(entry, rng).items()}
            else:
                feeds = _feeds(entry, rng, k=k if key == "unet_control" else 1)
            out[f"{key}{suffix}_s"] = _median_seconds(functools.partial(sess.run, None, feeds), repeats)
        del sess
    if "unet_batch1_s" in out and "null_text_grad_s" in out:
        out["grad_over_forward"] = round(out["null_text_grad_s"] / out["unet_batch1_s"], 2)
    peak = peak_rss_bytes()
    out["peak_rss_mb"] = None if peak is None else round(peak / 2**20)
    return out


def time_reference(config: str, seed: int = 0, repeats: int = 3) -> dict:
    """The PyTorch reference's side of the same measurement, on the random weights `python -m exporter random
    --config CONFIG --seed SEED` exports: one UNet forward (batch 1) and one null-text gradient step through
    autograd with diffusers' own attention, as exporter/reference.py optimises; medians after a warm-up."""
    import torch

    from . import grad_graph
    from .configs import build_random

    unet = build_random(config, seed).unet.eval().requires_grad_(False)
    inputs = grad_graph.example_inputs(unet)
    step = grad_graph.NullTextGrad(unet, "epsilon")

    def forward():
        with torch.no_grad():
            unet(inputs[0], inputs[1], inputs[2], return_dict=False)

    out: dict = {"reference_threads": torch.get_num_threads()}
    out["reference_unet_batch1_s"] = _median_seconds(forward, repeats)
    out["reference_null_text_grad_s"] = _median_seconds(lambda: step(*inputs), repeats)
    out["reference_grad_over_forward"] = round(out["reference_null_text_grad_s"] / out["reference_unet_batch1_s"], 2)
    return out
