"""Train shapes-tiny: AutoencoderKL, then UNet2DConditionModel + CLIPTextModel, on the procedural shapes world.

    python -m exporter.shapes.train --out out/shapes-tiny                 # defaults: ~130 min on 2 CPU cores
    python -m exporter.shapes.train --out out/shapes-tiny --device cuda   # same recipe on a GPU
    python -m exporter.shapes.train --out out/g --init-from out/shapes-v1 # only the grounding stage, from a
                                                                          # trained folder (e.g. exporter.recover's)

Stages (each resumable from --out/checkpoints/, so rerunning the same command continues where it stopped):
  1. vae    AutoencoderKL on rendered scenes: L1 + L2 + a tiny KL; then its scaling_factor is set so the
            encoder-mean latents of training images have unit std.
  2. pool   renders --pool training scenes once and encodes them to encoder-mean latents (x scaling_factor),
            with each scene's regions (objects, background) at the latent size.
  3. unet   UNet2DConditionModel + CLIPTextModel trained jointly with SD's DDPM schedule (epsilon), 10% empty
            prompts, AdamW + warm-up + cosine decay, EMA of both; optional evaluations between chunks.
  3b. ground  from stage 3's EMA weights: the same epsilon loss plus the phrase tie and TokenCompose's token
            loss (exporter/shapes/grounding.py), so that a word's embedding and attention map are its own and
            Prompt-to-Prompt edits keep what the prompt did not change; fresh AdamW, warm-up, cosine, EMA.
  4. save   diffusers-style folder: unet/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json,
            train_info.json, losses.csv, eval.csv, losses.png; then the held-out text-to-image evaluation.

Everything is seeded: the scene of every (stage, step, slot) comes from its own numpy stream and the noise of
every step from a CPU torch.Generator seeded by (seed, stage, step), so a resumed run equals an unbroken one.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import grounding as G
from . import models as M
from . import sample as SP
from . import scenes as S
from . import tokenizer as T

# Stream ids of the numpy generators (scenes.train_batch(stream=...)) and torch seeds.
_STREAM_VAE, _STREAM_POOL, _STREAM_ORDER, _STREAM_DROP, _STREAM_SWAP = 1, 2, 3, 4, 5
_STAGE_IDS = {"vae": 1, "unet": 2, "ground": 3}


def _seed(seed: int, stage: str, step: int) -> int:
    return (seed * 1_000_003 + _STAGE_IDS[stage] * 100_000_007 + step) % (2**63 - 1)


def _lr_at(step: int, total: int, base: float, warmup: int, final_frac: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


class EMA:
    """Exponential moving average of parameters (decay warms up as min(decay, (1+n)/(10+n)))."""

    def __init__(self, params, decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]
        self.n = 0

    @torch.no_grad()
    def update(self, params):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for s, p in zip(self.shadow, params):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, params):
        for s, p in zip(self.shadow, params):
            p.copy_(s)

    def state_dict(self):
        return {"decay": self.decay, "n": self.n, "shadow": self.shadow}

    def load_state_dict(self, d):
        self.decay, self.n = d["decay"], d["n"]
        for s, v in zip(self.shadow, d["shadow"]):
            s.copy_(v)


class Logger:
    """Appends rows to a CSV (header fixed at creation); rows are also kept for the plots."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        if path.exists():  # a resumed run keeps the columns it started with
            with path.open() as f:
                self.fields = next(csv.reader(f), fields)
        else:
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(fields)

    def write(self, rows: list[dict]):
        if not rows:
            return
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            for r in rows:
                w.writerow([_fmt(r.get(k, "")) for k in self.fields])

    def truncate_after(self, stage: str, step: int):
        """Drop rows of ``stage`` past ``step`` (written after the checkpoint we resume from)."""
        if not self.path.exists():
            return
        with self.path.open() as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if not (r.get("stage") == stage and int(r["step"]) > step)]
        if len(keep) != len(rows):
            with self.path.open("w", newline="") as f:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(keep)


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def _save_ckpt(path: Path, state: dict):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _images(scenes_) -> np.ndarray:
    return S.render_batch(scenes_)


# --------------------------------------------------------------------------------------------------
# Stage 1: VAE
# --------------------------------------------------------------------------------------------------


def train_vae(a, out: Path, dev: torch.device, log: Logger):
    ck = out / "checkpoints" / "vae.pt"
    torch.manual_seed(a.seed)
    vae = M.build_vae(sample_size=a.image_size).to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=a.vae_lr, weight_decay=0.0)
    step, elapsed = 0, 0.0
    if ck.exists():
        st = torch.load(ck, map_location=dev, weights_only=False)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        log.truncate_after("vae", step)
        print(f"[vae] resumed at step {step}")
    if st_done(ck) and step >= a.vae_steps:
        return vae, st_done(ck)
    vae.train()
    npix = 3 * a.image_size * a.image_size
    t0, rows = time.time() - elapsed, []
    while step < a.vae_steps:
        lr = _lr_at(step, a.vae_steps, a.vae_lr, a.vae_warmup, 0.02)
        for g in opt.param_groups:
            g["lr"] = lr
        x = SP.to_tensor(_images(S.train_batch(a.seed, step, a.vae_batch, a.image_size, _STREAM_VAE)), dev)
        gen = torch.Generator().manual_seed(_seed(a.seed, "vae", step))
        post = vae.encode(x).latent_dist
        eps = torch.randn(post.mean.shape, generator=gen).to(dev)
        z = post.mean + post.std * eps
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        l2 = (rec - x).pow(2).mean()
        kl = post.kl().mean() / npix
        loss = l1 + l2 + a.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        rows.append(dict(stage="vae", step=step, loss=loss.item(), l1=l1.item(), l2=l2.item(), kl=kl.item(),
                         lr=lr, elapsed_s=time.time() - t0))
        if step % a.log_every == 0 or step == a.vae_steps:
            r = rows[-1]
            print(f"[vae] {step}/{a.vae_steps} loss {r['loss']:.4f} l1 {r['l1']:.4f} l2 {r['l2']:.5f} "
                  f"{r['elapsed_s'] / step:.3f}s/step", flush=True)
        if step % a.ckpt_every == 0 or step == a.vae_steps:
            log.write(rows)
            rows = []
            _save_ckpt(ck, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                            "elapsed": time.time() - t0, "done": None})
    wall = time.time() - t0
    vae.eval()
    held = S.split_scenes("heldout", a.vae_eval, a.seed, a.image_size)
    ev = SP.vae_psnr(vae, held)
    print(f"[vae] held-out reconstruction PSNR {ev['psnr_mean']:.2f} dB (min {ev['psnr_min']:.2f}) on {ev['n']}")
    done = {"steps": step, "wall_s": wall, "final_loss": _mean_loss(log, "vae"),
            "heldout_psnr": ev}
    _save_ckpt(ck, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": wall,
                    "done": done})
    return vae, done


def st_done(ck: Path):
    if not ck.exists():
        return None
    return torch.load(ck, map_location="cpu", weights_only=False).get("done")


def _mean_loss(log: Logger, stage: str, n: int = 100) -> float | None:
    r = _tail(log, stage, n)
    return float(np.mean([x["loss"] for x in r])) if r else None


def _tail(log: Logger, stage: str, n: int = 100) -> list[dict]:
    with log.path.open() as f:
        rows = [r for r in csv.DictReader(f) if r["stage"] == stage]
    return [{k: float(v) for k, v in r.items() if k not in ("stage",) and v != ""} for r in rows[-n:]]


# --------------------------------------------------------------------------------------------------
# Stage 2: latent pool
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def build_pool(a, vae, dev: torch.device):
    """Scenes of the pool (deterministic): prompts, encoder-mean latents (unscaled, on CPU) and the area
    coverage of each scene's regions (object 0, object 1, background) at the latent size, float16."""
    t0 = time.time()
    rng = S.split_rng("train", a.seed, _STREAM_POOL)
    scenes_ = [S.sample_split_scene(rng, "train", a.image_size) for _ in range(a.pool)]
    prompts = [S.prompt_for(s) for s in scenes_]
    lats = []
    bs = 256
    for i in range(0, a.pool, bs):
        lats.append(SP.encode_images(vae, _images(scenes_[i:i + bs]), bs, dev).cpu())
    lat = torch.cat(lats)
    size = lat.shape[-1]
    regions = torch.from_numpy(np.stack([G.regions(s, size) for s in scenes_])).half()
    print(f"[pool] {a.pool} scenes encoded in {time.time() - t0:.0f}s")
    return prompts, lat, regions, time.time() - t0


# --------------------------------------------------------------------------------------------------
# Stage 3: UNet + text encoder
# --------------------------------------------------------------------------------------------------


def _unet_batch(a, step: int, prompts, lat, sf: float, vae, dev):
    """(latents x sf, token ids) of a step: pool order is a per-epoch permutation; on-the-fly without pool."""
    if lat is not None:
        per = a.pool // a.batch
        epoch, k = divmod(step, per)
        perm = np.random.default_rng([a.seed, _STREAM_ORDER, epoch]).permutation(a.pool)
        idx = perm[k * a.batch:(k + 1) * a.batch]
        z = lat[idx].to(dev) * sf
        ps = [prompts[i] for i in idx]
    else:
        sc = S.train_batch(a.seed, step, a.batch, a.image_size, 0)
        z = SP.encode_images(vae, _images(sc), a.batch, dev) * sf
        ps = [S.prompt_for(s) for s in sc]
    drop = np.random.default_rng([a.seed, _STREAM_DROP, step]).random(len(ps)) < a.p_uncond
    ps = ["" if d else p for p, d in zip(ps, drop)]
    return z, torch.from_numpy(T.encode_batch(ps)).to(dev)


def _noised(z: torch.Tensor, acp: torch.Tensor, seed: int, dev):
    """(noisy latents, the noise, timesteps) of a step: == DDPMScheduler.add_noise, noise and timesteps from a
    CPU generator seeded per step, so a resumed run draws what an unbroken one does."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(z.shape, generator=gen).to(dev)
    t = torch.randint(0, len(acp), (len(z),), generator=gen).to(dev)
    ac = acp[t].view(-1, 1, 1, 1)
    return ac.sqrt() * z + (1 - ac).sqrt() * noise, noise, t


def _load_joint(ck: Path, unet, te, opt, ema, dev) -> tuple[int, float]:
    """Restores UNet, text encoder, optimiser and EMA from a stage's checkpoint: (step, elapsed), (0, 0) if none."""
    if not ck.exists():
        return 0, 0.0
    st = torch.load(ck, map_location=dev, weights_only=False)
    unet.load_state_dict(st["unet"])
    te.load_state_dict(st["text_encoder"])
    opt.load_state_dict(st["opt"])
    ema.load_state_dict(st["ema"])
    return st["step"], st["elapsed"]


def _save_joint(ck: Path, unet, te, opt, ema, step: int, elapsed: float) -> None:
    _save_ckpt(ck, {"unet": unet.state_dict(), "text_encoder": te.state_dict(), "opt": opt.state_dict(),
                    "ema": ema.state_dict(), "step": step, "elapsed": elapsed})


def tail_mask(ids: torch.Tensor) -> torch.Tensor:
    """(batch, 77) bool: the positions from each row's end token on (the end token and the padding after it)."""
    pos = torch.arange(ids.shape[1], device=ids.device)
    end = (ids == T.EOS_ID).int().argmax(1)  # the first EOS; the start token is never EOS
    return pos[None] >= end[:, None]


def isolate_words(te) -> None:
    """--isolated-words: every text-encoder layer adds nothing to the residual stream (its attention output
    projection and its MLP's last layer zeroed and frozen), so each position's output is the final layer norm
    of its own token and position embeddings: changing one word changes that position's embedding and no other,
    which is the invariance Prompt-to-Prompt's word swap assumes (a large CLIP has it nearly; a tiny encoder
    trained jointly does not: exporter/shapes/grounding.py). The architecture, the ONNX graph and the model
    folder are a CLIPTextModel's as before; the UNet must then bind a colour to its shape by position."""
    for layer in getattr(te, "text_model", te).encoder.layers:  # transformers 5 dropped the text_model level
        for lin in (layer.self_attn.out_proj, layer.mlp.fc2):
            with torch.no_grad():
                lin.weight.zero_()
                lin.bias.zero_()
            lin.requires_grad_(False)


def tie_tail(ctx: torch.Tensor, ctx_empty: torch.Tensor, ids: torch.Tensor):
    """(what the UNet reads, tie loss) for --tail-tie.

    CLIP's text encoder is causal, so its end token and the padding after it see the whole sentence; a UNet
    trained on them reads the content from there, everywhere in the image, and Prompt-to-Prompt's word maps
    go flat. Here the UNet reads the empty prompt's embeddings at those positions (the same for every prompt,
    since padding is the end token as in SD 1.x), so it must read the content from the words; the tie loss
    pulls the text encoder's own tail onto the empty prompt's, so that at inference, where nothing is
    replaced, the UNet gets what it was trained on and the model folder's contract is unchanged.

    Measured at full length (CHANGELOG): the attention moves onto the words, but the object word's map stays
    flat and a changed word, which changes every later word's embedding, moves the background more; so this is
    an option, off in the shipped recipe."""
    tail = tail_mask(ids)[..., None]
    target = ctx_empty.expand_as(ctx)
    tie = ((ctx - target.detach()) ** 2 * tail).sum() / (tail.sum() * ctx.shape[-1])
    return torch.where(tail, target, ctx), tie


def transplant_unet(src, dst) -> dict[str, int]:
    """Starts `dst` (a UNet in another layout) from a trained `src`: every tensor whose name and shape match is
    copied; an attention block `src` lacks starts as the identity (its output projection zeroed, as SD's
    zero_module does), so the warm start computes what `src` did, less the attention blocks `dst` lacks."""
    have = src.state_dict()
    mine = dst.state_dict()
    copied = {k: v for k, v in have.items() if k in mine and mine[k].shape == v.shape}
    dst.load_state_dict(copied, strict=False)
    fresh = {k.rsplit(".", 1)[0] for k in mine if k not in copied}
    with torch.no_grad():
        for name, mod in dst.named_modules():
            if name.endswith("proj_out") and name in fresh:
                mod.weight.zero_()
                mod.bias.zero_()
    return {"copied": len(copied), "new": len(mine) - len(copied), "dropped": len(set(have) - set(copied))}


def train_unet(a, out: Path, dev: torch.device, vae, sf: float, pool, log: Logger, evlog: Logger, warm=None):
    ck = out / "checkpoints" / "unet.pt"
    torch.manual_seed(a.seed + 1)
    unet = M.build_unet(a.unet_layout, sample_size=a.image_size // 4).to(dev)
    te = M.build_text_encoder().to(dev)
    if warm is not None:
        counts = transplant_unet(warm["unet"], unet)
        te.load_state_dict(warm["text_encoder"].state_dict())
        print(f"[unet] warm start from {a.warm_start}: {counts['copied']} tensors copied, {counts['new']} new "
              f"(attention it lacked, starting as the identity), {counts['dropped']} dropped")
    if a.isolated_words:
        isolate_words(te)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), weight_decay=0.01)
    ema = EMA(params, a.ema)
    acp = M.ddpm_scheduler().alphas_cumprod.to(dev)
    empty_ids = torch.from_numpy(T.encode_batch([""])).to(dev)
    step, elapsed = _load_joint(ck, unet, te, opt, ema, dev)
    if step:
        log.truncate_after("unet", step)
        evlog.truncate_after("unet", step)
        print(f"[unet] resumed at step {step}")
    prompts, lat = pool if pool is not None else (None, None)
    unet.train()
    te.train()
    t0, rows = time.time() - elapsed, []
    eval_s = 0.0
    stop = min(a.unet_steps, a.until) if a.until else a.unet_steps
    while step < stop:
        lr = _lr_at(step, a.unet_steps, a.lr, a.warmup, 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        z, ids = _unet_batch(a, step, prompts, lat, sf, vae, dev)
        noisy, noise, t = _noised(z, acp, _seed(a.seed, "unet", step), dev)
        ctx = te(ids)[0]
        tie = None
        if a.tail_tie:
            ctx, tie = tie_tail(ctx, te(empty_ids)[0], ids)
        pred = unet(noisy, t, encoder_hidden_states=ctx).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        (loss + a.tail_tie * tie if tie is not None else loss).backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(params)
        step += 1
        rows.append(dict(stage="unet", step=step, loss=loss.item(), grad_norm=float(gn), lr=lr,
                         elapsed_s=time.time() - t0 - eval_s, tail_tie=tie.item() if tie is not None else ""))
        if step % a.log_every == 0 or step == stop:
            recent = np.mean([r["loss"] for r in rows[-a.log_every:]])
            tied = f" tail-tie {np.mean([r['tail_tie'] for r in rows[-a.log_every:]]):.2e}" if a.tail_tie else ""
            print(f"[unet] {step}/{a.unet_steps} loss {recent:.4f}{tied} lr {lr:.2e} "
                  f"{rows[-1]['elapsed_s'] / max(1, step):.3f}s/step", flush=True)
        if step % a.ckpt_every == 0 or step == stop:
            log.write(rows)
            rows = []
            _save_joint(ck, unet, te, opt, ema, step, time.time() - t0 - eval_s)
        if a.eval_every and step % a.eval_every == 0 and step < a.unet_steps:
            te0 = time.time()
            m = _ema_model(unet, te, ema, vae, dev)
            r = SP.evaluate_t2i(m, a.eval_every_n, a.eval_every_steps, 7.5, a.seed)
            r.pop("accuracy_by_objects")
            evlog.write([dict(stage="unet", step=step, **r)])
            print(f"[eval] step {step}: accuracy {r['accuracy']:.3f} ({a.eval_every_n} prompts, "
                  f"{a.eval_every_steps} DDIM steps, {time.time() - te0:.0f}s)", flush=True)
            eval_s += time.time() - te0
            unet.train()
            te.train()
    wall = time.time() - t0 - eval_s
    return unet, te, ema, step, wall


# --------------------------------------------------------------------------------------------------
# Stage 3b: grounding (fine-tune of the stage-3 model so each word says, and is read as, its own thing)
# --------------------------------------------------------------------------------------------------


def _ground_batch(a, step: int, prompts, lat, regions, sf: float, dev):
    """(latents x sf, prompts after dropout, regions) of a grounding step, from its own pool order."""
    per = a.pool // a.batch
    epoch, k = divmod(step, per)
    perm = np.random.default_rng([a.seed, _STREAM_ORDER, 1_000_000 + epoch]).permutation(a.pool)
    idx = perm[k * a.batch:(k + 1) * a.batch]
    drop = np.random.default_rng([a.seed, _STREAM_DROP, 1_000_000 + step]).random(len(idx)) < a.p_uncond
    ps = ["" if d else prompts[i] for i, d in zip(idx, drop)]
    return lat[idx].to(dev) * sf, ps, regions[idx].float().to(dev)


def train_ground(a, out: Path, dev: torch.device, unet, te, sf: float, pool, log: Logger):
    """Fine-tunes UNet + text encoder with the epsilon loss plus the phrase tie and the grounding loss
    (exporter/shapes/grounding.py); returns the EMA'd modules' (unet, te, ema, wall seconds)."""
    ck = out / "checkpoints" / "ground.pt"
    torch.manual_seed(a.seed + 2)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=a.ground_lr, betas=(0.9, 0.999), weight_decay=0.01)
    ema = EMA(params, a.ground_ema)
    acp = M.ddpm_scheduler().alphas_cumprod.to(dev)
    step, elapsed = _load_joint(ck, unet, te, opt, ema, dev)
    if step:
        log.truncate_after("ground", step)
        print(f"[ground] resumed at step {step}")
    prompts, lat, regions = pool
    plain = unet.attn_processors
    maps = G.record_cross_attention(unet)
    unet.train()
    te.train()
    t0, rows = time.time() - elapsed, []
    stop = min(a.ground_steps, a.ground_until) if a.ground_until else a.ground_steps
    while step < stop:
        lr = _lr_at(step, a.ground_steps, a.ground_lr, a.ground_warmup, 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        z, ps, reg = _ground_batch(a, step, prompts, lat, regions, sf, dev)
        ids, ids_swapped, keep = G.phrase_tie_batch(ps, np.random.default_rng([a.seed, _STREAM_SWAP, step]))
        token_region = torch.from_numpy(np.stack([G.word_regions(p) for p in ps])).to(dev)
        noisy, noise, t = _noised(z, acp, _seed(a.seed, "ground", step), dev)
        ctx = te(ids.to(dev))[0]
        tie = G.phrase_tie_loss(ctx, te(ids_swapped.to(dev))[0], keep.to(dev))
        maps.clear()
        pred = unet(noisy, t, encoder_hidden_states=ctx).sample
        eps = F.mse_loss(pred, noise)
        ground = G.grounding_loss(maps, reg, token_region)
        loss = eps + a.phrase_tie * tie + a.grounding * ground
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(params)
        step += 1
        rows.append(dict(stage="ground", step=step, loss=eps.item(), grad_norm=float(gn), lr=lr,
                         elapsed_s=time.time() - t0, phrase_tie=tie.item(), grounding=ground.item()))
        if step % a.log_every == 0 or step == stop:
            last = rows[-a.log_every:]
            print(f"[ground] {step}/{a.ground_steps} eps {np.mean([r['loss'] for r in last]):.4f} "
                  f"phrase-tie {np.mean([r['phrase_tie'] for r in last]):.2e} "
                  f"grounding {np.mean([r['grounding'] for r in last]):.4f} lr {lr:.2e} "
                  f"{rows[-1]['elapsed_s'] / max(1, step):.3f}s/step", flush=True)
        if step % a.ckpt_every == 0 or step == stop:
            log.write(rows)
            rows = []
            _save_joint(ck, unet, te, opt, ema, step, time.time() - t0)
    unet.set_attn_processor(plain)
    return unet, te, ema, time.time() - t0


def _load_init(folder: Path, dev):
    """VAE, UNet and text encoder of a trained diffusers-style folder (--init-from)."""
    m = SP.load(folder, str(dev))
    for mod in (m.unet, m.text_encoder):
        mod.requires_grad_(True)
    return {"vae": m.vae, "unet": m.unet, "text_encoder": m.text_encoder}


def _ema_model(unet, te, ema, vae, dev) -> SP.ShapesModel:
    u, t = copy.deepcopy(unet).eval(), copy.deepcopy(te).eval()
    ema.copy_to(list(u.parameters()) + list(t.parameters()))
    return SP.ShapesModel(u, vae, t, dev)


# --------------------------------------------------------------------------------------------------
# Stage 4: save
# --------------------------------------------------------------------------------------------------


def save_folder(out: Path, unet, te, vae):
    from diffusers import __version__ as dv

    for name, m in (("unet", unet), ("vae", vae), ("text_encoder", te)):
        if (out / name).exists():
            shutil.rmtree(out / name)
        m.save_pretrained(out / name, safe_serialization=True)
    T.save(out / "tokenizer")
    sch = M.ddim_scheduler()
    sch.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": dv,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    # a model card, whose licence the exporter copies into nti.json
    (out / "README.md").write_text("---\nlicense: mit\n---\n\n# shapes-tiny\n\nTrained by exporter/shapes/train.py "
                                   "on generated scenes of coloured shapes (see models/shapes-tiny/REPORT.md).\n")


def plot(out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (out / "losses.csv").open() as f:
        rows = list(csv.DictReader(f))
    ev = []
    if (out / "eval.csv").exists():
        with (out / "eval.csv").open() as f:
            ev = list(csv.DictReader(f))
    stages = [st for st in ("vae", "unet", "ground") if any(x["stage"] == st for x in rows)] or ["unet"]
    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4.2), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        r = [x for x in rows if x["stage"] == stage]
        if not r:
            ax.set_visible(False)
            continue
        st = np.array([int(x["step"]) for x in r])
        lo = np.array([float(x["loss"]) for x in r])
        ax.plot(st, lo, lw=0.4, alpha=0.35, color="C0", label="loss")
        k = max(1, len(lo) // 50)
        if len(lo) > k:
            sm = np.convolve(lo, np.ones(k) / k, mode="valid")
            ax.plot(st[k - 1:], sm, color="C0", label=f"mean of {k}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title({"vae": "AutoencoderKL: L1 + L2 + KL", "unet": "UNet + text encoder: epsilon MSE",
                      "ground": "grounding: epsilon MSE, phrase tie, token loss"}[stage])
        if stage == "ground":
            for key, colour in (("phrase_tie", "C1"), ("grounding", "C2")):
                ax.plot(st, [float(x[key]) for x in r], lw=0.6, color=colour, label=key.replace("_", " "))
        ax.grid(alpha=0.3)
        if stage == "unet" and ev:
            ax2 = ax.twinx()
            ax2.plot([int(x["step"]) for x in ev], [float(x["accuracy"]) for x in ev], "o-", color="C3",
                     label="held-out accuracy")
            ax2.set_ylim(0, 1.02)
            ax2.set_ylabel("colour+shape accuracy", color="C3")
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--image-size", type=int, default=64)
    g = ap.add_argument_group("autoencoder")
    g.add_argument("--vae-steps", type=int, default=3000)
    g.add_argument("--vae-batch", type=int, default=16)
    g.add_argument("--vae-lr", type=float, default=1e-3)
    g.add_argument("--vae-warmup", type=int, default=100)
    g.add_argument("--vae-kl", type=float, default=1e-6, help="weight of KL (summed over latent) / pixels")
    g.add_argument("--vae-eval", type=int, default=256, help="held-out scenes for the PSNR check")
    g = ap.add_argument_group("unet + text encoder")
    g.add_argument("--unet-layout", default="v1", choices=sorted(M.UNET_LAYOUTS),
                   help="where the UNet attends (see exporter/shapes/models.py); v1 is the shipped model's")
    g.add_argument("--tail-tie", type=float, default=0.0,
                   help="the UNet reads the empty prompt's embeddings from the end token on, and the text encoder "
                        "is pulled there with this weight, so content comes from the words (0: off, the shipped "
                        "v1 recipe; see tie_tail)")
    g.add_argument("--isolated-words", action="store_true",
                   help="each text-encoder output depends on its own token only (see isolate_words)")
    g.add_argument("--unet-steps", type=int, default=8000)
    g.add_argument("--batch", type=int, default=64)
    g.add_argument("--lr", type=float, default=8e-4)
    g.add_argument("--warmup", type=int, default=300)
    g.add_argument("--ema", type=float, default=0.999)
    g.add_argument("--p-uncond", type=float, default=0.1, help="prompt dropout (empty prompt) for CFG")
    g.add_argument("--pool", type=int, default=65536,
                   help="training scenes rendered+encoded once (0: render and encode every batch)")
    g.add_argument("--until", type=int, default=0, help="stop the UNet stage after this step (resume later)")
    g.add_argument("--init-from", type=Path, default=None,
                   help="a trained diffusers-style shapes folder (e.g. exporter.recover's copy of the shipped model): "
                        "its VAE, UNet and text encoder replace the vae and unet stages; the grounding stage follows")
    g.add_argument("--warm-start", type=Path, default=None,
                   help="a trained shapes folder whose VAE replaces the vae stage and whose UNet and text encoder start "
                        "the unet stage (--unet-steps more steps), also in another --unet-layout (see transplant_unet)")
    g = ap.add_argument_group("grounding (exporter/shapes/grounding.py): fine-tune after the unet stage")
    g.add_argument("--ground-steps", type=int, default=3500, help="steps of the grounding stage (0: none)")
    g.add_argument("--ground-until", type=int, default=0,
                   help="end the grounding stage after this step, its learning-rate schedule still that of "
                        "--ground-steps, and save the model (the shipped weights stop at 1500 of 3000)")
    g.add_argument("--ground-lr", type=float, default=5e-4)
    g.add_argument("--ground-warmup", type=int, default=100)
    g.add_argument("--ground-ema", type=float, default=0.998)
    g.add_argument("--phrase-tie", type=float, default=1.0,
                   help="weight of the phrase tie: outputs outside a swapped word's phrase must not change")
    g.add_argument("--grounding", type=float, default=0.1,
                   help="weight of TokenCompose's token loss: each word's cross-attention inside its region")
    g = ap.add_argument_group("bookkeeping")
    g.add_argument("--log-every", type=int, default=50)
    g.add_argument("--ckpt-every", type=int, default=500)
    g.add_argument("--eval-every", type=int, default=0, help="evaluate between chunks of this many UNet steps")
    g.add_argument("--eval-every-n", type=int, default=50)
    g.add_argument("--eval-every-steps", type=int, default=20)
    g.add_argument("--eval-prompts", type=int, default=200, help="final held-out evaluation (0: skip)")
    g.add_argument("--eval-steps", type=int, default=50)
    g.add_argument("--eval-guidance", type=float, default=7.5)
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    dev = torch.device(a.device)
    out = a.out
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    args_path = out / "checkpoints" / "args.json"
    argd = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    # Settings that change the trained weights; the others (bookkeeping, evaluation) may change on resume.
    recipe = {k: v for k, v in argd.items()
              if k not in ("out", "until", "ground_until", "threads", "device", "log_every", "ckpt_every", "vae_eval")
              and not k.startswith("eval")}
    if args_path.exists():
        old = {"unet_layout": "v1", "tail_tie": 0.0, "isolated_words": False, "init_from": None, "ground_steps": 0,  # runs from before them
               "warm_start": None,
               **json.loads(args_path.read_text())}
        diff = {k: (old.get(k), v) for k, v in recipe.items() if old.get(k) != v}
        if diff:
            raise SystemExit(f"{out} holds a run with other settings {diff}; use another --out or delete it")
    else:
        args_path.write_text(json.dumps(recipe, indent=2))
    T0 = time.time()
    log = Logger(out / "losses.csv", ["stage", "step", "loss", "l1", "l2", "kl", "grad_norm", "lr", "elapsed_s",
                                      "tail_tie", "phrase_tie", "grounding"])
    evlog = Logger(out / "eval.csv", ["stage", "step", "n", "steps", "guidance", "seed", "accuracy", "per_object",
                                      "colour_accuracy", "shape_accuracy", "background_accuracy", "seconds"])

    if a.init_from and a.warm_start:
        raise SystemExit("--init-from skips the unet stage, --warm-start runs it: give one of them")
    init = _load_init(a.init_from, dev) if a.init_from else None
    warm = _load_init(a.warm_start, dev) if a.warm_start else None
    if init or warm:
        vae, vae_info = (init or warm)["vae"], {"init_from": str(a.init_from or a.warm_start), "wall_s": 0.0}
    else:
        vae, vae_info = train_vae(a, out, dev, log)
    vae.eval().requires_grad_(False)

    pool = None
    pool_s = 0.0
    if a.pool:
        prompts, lat, regions, pool_s = build_pool(a, vae, dev)
        pool = (prompts, lat)
        std = float(lat.std())
    else:
        if a.ground_steps:
            raise SystemExit("--ground-steps needs the pool (--pool > 0)")
        sc = S.split_scenes("train", 4096, a.seed + 7, a.image_size)
        std = float(SP.encode_images(vae, _images(sc), 256, dev).std())
    if init or warm:  # the UNet was trained on this VAE's latents at its scale: keep it
        sf = float(vae.config.scaling_factor)
    else:
        sf = 1.0 / std
        vae.register_to_config(scaling_factor=sf)
    print(f"[vae] scaling_factor = {sf:.5f} (latent std {std:.4f})")

    if init:
        unet, te, step, unet_wall = init["unet"], init["text_encoder"], a.unet_steps, 0.0
        if a.isolated_words:
            isolate_words(te)
    else:
        unet, te, ema, step, unet_wall = train_unet(a, out, dev, vae, sf, pool, log, evlog, warm)
        warm = None
        if step < a.unet_steps:
            print(f"[unet] stopped at step {step} (--until); rerun without --until to continue")
            plot(out)
            return
        ema.copy_to(list(unet.parameters()) + list(te.parameters()))
    ground_wall = 0.0
    if a.ground_steps:
        unet, te, ema, ground_wall = train_ground(a, out, dev, unet, te, sf, (prompts, lat, regions), log)
        ema.copy_to(list(unet.parameters()) + list(te.parameters()))
    unet.eval()
    te.eval()
    save_folder(out, unet.cpu(), te.cpu(), vae.cpu())
    unet.to(dev), te.to(dev), vae.to(dev)
    plot(out)

    info = {
        "seed": a.seed,
        "args": argd,
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "transformers": __import__("transformers").__version__,
        "device": a.device if a.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "params": {"unet": M.n_params(unet), "vae": M.n_params(vae), "text_encoder": M.n_params(te)},
        "vae": vae_info,
        "scaling_factor": sf,
        "pool": {"scenes": a.pool, "wall_s": pool_s},
        "unet": {"steps": step, "batch": a.batch, "wall_s": unet_wall,
                 "final_loss": _mean_loss(log, "unet", 200)},
        "ground": {"steps": min(a.ground_steps, a.ground_until or a.ground_steps), "batch": a.batch, "wall_s": ground_wall,
                   "final_loss": _mean_loss(log, "ground", 200)},
    }
    if a.eval_prompts:
        t = time.time()
        r = SP.evaluate_t2i(SP.ShapesModel(unet, vae, te, dev), a.eval_prompts, a.eval_steps, a.eval_guidance,
                            a.seed)
        evlog.write([dict(stage="final", step=step, **{k: v for k, v in r.items() if k != "accuracy_by_objects"})])
        info["eval"] = r
        print(f"[eval] held-out text-to-image accuracy {r['accuracy']:.3f} ({a.eval_prompts} prompts, "
              f"{a.eval_steps} DDIM steps, w={a.eval_guidance}, {time.time() - t:.0f}s)")
    info["wall_s_this_invocation"] = time.time() - T0
    info["wall_s_total"] = vae_info["wall_s"] + pool_s + unet_wall + ground_wall + info.get("eval", {}).get("seconds", 0.0)
    (out / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    plot(out)
    print(f"[done] {out} ({info['wall_s_total'] / 60:.1f} min of training+eval)")


if __name__ == "__main__":
    main()
