"""`python -m exporter.invert`: the PyTorch reference doing what `nti invert` does, for the benchmarks.

Loads a diffusers folder, then times one job: prompt and image encoding, pivotal DDIM inversion, null-text
optimisation on the notebook's schedule (its redundant passes included), the reconstruction from the
optimised null embeddings and the DDIM-only reconstruction beside it, both decoded. The image must
already be at the model's size (the benchmark writes it with the engine's own preprocessing), so both
sides see the same pixels. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def run(model: Path, image_path: Path, prompt: str, settings, threads: int = 0, save: Path | None = None) -> dict:
    from PIL import Image

    from .export import load_diffusers
    from .reference import Reference, psnr

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    ref = Reference(load_diffusers(str(model)), settings)
    load_seconds = time.perf_counter() - t0
    image = np.asarray(Image.open(image_path).convert("RGB"))
    size = ref.c.image_size
    if image.shape[:2] != (size, size):
        raise SystemExit(f"{image_path}: {image.shape[1]}x{image.shape[0]}, the model wants {size}x{size}")

    started = time.perf_counter()
    cond, uncond = ref.encode_prompts([prompt]), ref.encode_prompts([""])
    z0 = ref.image_to_latent(image)
    t = time.perf_counter()
    pivots = ref.ddim_inversion(z0, cond)
    nt = ref.null_text(pivots, cond, uncond)
    optimise_seconds = time.perf_counter() - t
    with torch.no_grad():
        latents = torch.cat([ref.sample(pivots[-1], cond, nt.null_embeddings),
                             ref.sample(pivots[-1], cond, [uncond] * settings.steps)])
    images = ref.latent_to_image(latents)
    seconds = time.perf_counter() - started
    if save is not None:
        Image.fromarray(images[0]).save(save)
    return {
        "seconds": seconds,
        "optimiseSeconds": optimise_seconds,
        "loadSeconds": load_seconds,
        "unetForward": ref.unet_forward,
        "unetBackward": nt.unet_backward,
        "innerIterations": sum(len(x) for x in nt.losses),
        "psnr": psnr(images[0], image),
        "ddimPsnr": psnr(images[1], image),
        "threads": torch.get_num_threads(),
        "peakRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    from .reference import Settings

    ap = argparse.ArgumentParser(prog="python -m exporter.invert", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="diffusers folder (e.g. from exporter.recover)")
    ap.add_argument("--image", required=True, type=Path)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--inner-steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--early-stop", type=float, default=1e-5)
    ap.add_argument("--early-stop-slope", type=float, default=2e-5)
    ap.add_argument("--inner-loop", choices=["notebook", "lean"], default="notebook")
    ap.add_argument("--null-init", choices=["empty", "prompt"], default="empty")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--save", type=Path, help="write the null-text reconstruction here (PNG)")
    args = ap.parse_args(argv)
    settings = Settings(steps=args.steps, guidance=args.guidance, inner_steps=args.inner_steps, lr=args.lr,
                        early_stop=args.early_stop, early_stop_slope=args.early_stop_slope,
                        inner_loop=args.inner_loop, null_init=args.null_init)
    print(json.dumps(run(args.model, args.image, args.prompt, settings, args.threads, args.save)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
