"""Text-to-image sampling (DDIM + classifier-free guidance) and evaluation of a shapes-tiny folder.

    python -m exporter.shapes.sample --from out/shapes --prompt "a red circle on a white background" --png x.png
    python -m exporter.shapes.sample --from out/shapes --eval 200        # held-out colour+shape accuracy
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import models as M
from . import scenes as S
from . import tokenizer as T


@dataclass
class ShapesModel:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    device: torch.device

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


def load(folder: str | Path, device: str = "cpu") -> ShapesModel:
    """Load a diffusers-style shapes-tiny folder (unet/, vae/, text_encoder/)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    dev = torch.device(device)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").to(dev).eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae").to(dev).eval()
    te = CLIPTextModel.from_pretrained(folder / "text_encoder").to(dev).eval()
    return ShapesModel(unet, vae, te, dev)


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float [-1,1] [B,3,H,W]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [-1,1] [B,3,H,W] -> uint8 [B,H,W,3] (rounded)."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode_images(vae, images: np.ndarray, batch_size: int = 64, device=None) -> torch.Tensor:
    """Encoder-mean latents (unscaled) of uint8 images, on ``device``."""
    device = device or next(vae.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        out.append(vae.encode(to_tensor(images[i:i + batch_size], device)).latent_dist.mean)
    return torch.cat(out)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Unscaled latents -> uint8 images."""
    return np.concatenate([to_uint8(vae.decode(latents[i:i + batch_size]).sample)
                           for i in range(0, len(latents), batch_size)])


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 batches [B,H,W,3] (single images broadcast as a batch of one)."""
    a = np.asarray(a, np.float64).reshape(-1, *np.shape(a)[-3:])
    b = np.asarray(b, np.float64).reshape(-1, *np.shape(b)[-3:])
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


@torch.no_grad()
def vae_psnr(vae, scenes: list, batch_size: int = 64) -> dict:
    """Reconstruction through encoder mean -> decoder (the latent docs/design.md §1 uses)."""
    imgs = S.render_batch(scenes)
    rec = decode_latents(vae, encode_images(vae, imgs, batch_size), batch_size)
    p = psnr(imgs, rec)
    return {"psnr_mean": float(p.mean()), "psnr_min": float(p.min()), "n": len(scenes)}


@torch.no_grad()
def text_embeddings(text_encoder, prompts: list[str], device) -> torch.Tensor:
    ids = torch.from_numpy(T.encode_batch(prompts)).to(device)
    return text_encoder(ids)[0]


@torch.no_grad()
def generate(model: ShapesModel, prompts: list[str], steps: int = 50, guidance: float = 7.5, seed: int = 0,
             batch_size: int = 100, latents: torch.Tensor | None = None) -> np.ndarray:
    """DDIM (eta 0) text-to-image with classifier-free guidance. Returns uint8 [B,64,64,3].

    The initial noise is drawn for all prompts at once from a CPU generator seeded with ``seed``, so the
    result does not depend on ``batch_size`` or the device's RNG."""
    dev = model.device
    n = len(prompts)
    if latents is None:
        g = torch.Generator().manual_seed(int(seed))
        c = model.unet.config
        latents = torch.randn((n, c.in_channels, c.sample_size, c.sample_size), generator=g)
    sched = M.ddim_scheduler()
    sched.set_timesteps(steps)
    uncond = text_embeddings(model.text_encoder, [""], dev)
    out = []
    for i in range(0, n, batch_size):
        lat = latents[i:i + batch_size].to(dev) * sched.init_noise_sigma
        b = len(lat)
        cond = text_embeddings(model.text_encoder, prompts[i:i + batch_size], dev)
        ctx = torch.cat([uncond.expand(b, -1, -1), cond]) if guidance != 1.0 else cond
        for t in sched.timesteps:
            inp = torch.cat([lat, lat]) if guidance != 1.0 else lat
            eps = model.unet(inp, t, encoder_hidden_states=ctx).sample
            if guidance != 1.0:
                eu, ec = eps.chunk(2)
                eps = eu + guidance * (ec - eu)
            lat = sched.step(eps, t, lat).prev_sample
        out.append(decode_latents(model.vae, lat / model.scaling_factor))
    return np.concatenate(out)


def heldout_prompts(n: int, seed: int = 0) -> list[str]:
    """Prompts of the first n held-out scenes (the scenes are never trained on; the (colour, shape,
    background) combinations may well be)."""
    return [S.prompt_for(s) for s in S.split_scenes("heldout", n, seed)]


def evaluate_t2i(model: ShapesModel, n: int = 200, steps: int = 50, guidance: float = 7.5, seed: int = 0,
                 batch_size: int = 100, return_images: bool = False) -> dict:
    """Generate n held-out prompts and judge them with the pixel classifier (scenes.score_prompt)."""
    prompts = heldout_prompts(n, seed)
    t0 = time.time()
    images = generate(model, prompts, steps, guidance, seed, batch_size)
    scores = [S.score_prompt(im, p) for im, p in zip(images, prompts)]
    by_n = defaultdict(list)
    for p, s in zip(prompts, scores):
        by_n[len(S.parse_prompt(p)[0])].append(s["objects_right"])
    res = {
        "n": n,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "accuracy": float(np.mean([s["objects_right"] for s in scores])),
        "per_object": float(np.mean([s["per_object"] for s in scores])),
        "colour_accuracy": float(np.mean([s["colour_right"] for s in scores])),
        "shape_accuracy": float(np.mean([s["shape_right"] for s in scores])),
        "background_accuracy": float(np.mean([s["background_right"] for s in scores])),
        "accuracy_by_objects": {str(k): float(np.mean(v)) for k, v in sorted(by_n.items())},
        "seconds": time.time() - t0,
    }
    if return_images:
        res["images"] = images
        res["prompts"] = prompts
        res["scores"] = scores
    return res


def save_grid(images: np.ndarray, path: str | Path, ncol: int = 10, scale: int = 2) -> None:
    from PIL import Image

    n, h, w, _ = images.shape
    nrow = (n + ncol - 1) // ncol
    grid = np.full((nrow * (h + 2), ncol * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, c * (w + 2) + 1:c * (w + 2) + 1 + w] = im
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="folder", required=True)
    ap.add_argument("--prompt", action="append", default=[])
    ap.add_argument("--eval", type=int, default=0, help="evaluate on N held-out prompts")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--png", default=None, help="write the generated images as a grid")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load(a.folder, a.device)
    if a.prompt:
        imgs = generate(model, a.prompt, a.steps, a.guidance, a.seed)
        for p, im in zip(a.prompt, imgs):
            print(p, "->", S.score_prompt(im, p) if _parses(p) else "")
        if a.png:
            save_grid(imgs, a.png)
    if a.eval:
        res = evaluate_t2i(model, a.eval, a.steps, a.guidance, a.seed, return_images=bool(a.png))
        if a.png:
            save_grid(res.pop("images"), a.png)
            res.pop("prompts"), res.pop("scores")
        print(json.dumps(res, indent=2))


def _parses(p: str) -> bool:
    try:
        S.parse_prompt(p)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    main()
