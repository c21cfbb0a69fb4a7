"""Two training losses that give shapes-tiny the property Prompt-to-Prompt assumes of SD's CLIP + UNet.

Prompt-to-Prompt keeps what a prompt edit did not change only if (a) changing one word leaves the other tokens'
embeddings nearly as they were, and (b) each word's cross-attention map covers what the word names. A large
pretrained CLIP and SD's UNet have both; a tiny model trained jointly from scratch has neither: its causal
text encoder spreads the whole sentence over every later token and the padding, and the UNet reads the
content from there, everywhere in the image (models/shapes-tiny/EDIT_DIAGNOSTICS.md). So:

- **phrase tie** (for (a)): each prompt is paired with a copy in which one attribute word is swapped (an
  object's colour or shape, or the background's colour); the text encoder's outputs at every position outside
  that word's phrase (the other object, the function words, the end token and the padding) are pulled
  together. The swapped word and the noun it modifies may differ. This is the invariance P2P's word swap
  relies on, asked for directly; the end/padding tie tried before (`tie_tail`) is the special case of the
  padding only.
- **grounding** (for (b)): the token loss of TokenCompose (Wang et al., "TokenCompose: Text-to-Image Diffusion
  with Token-level Supervision", CVPR 2024): for each of an object's words (colour, shape) and the
  background's (colour, "background"), the share of its cross-attention (mean over heads, every
  cross-attention layer) that falls outside its region, squared. The regions are exact here, since the
  scenes are rendered.

Both only shape training: the model folder, its graphs and the engine are unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..attention import ExplicitAttnProcessor
from . import scenes as S
from . import tokenizer as T

#: word -> its kind in the shapes grammar
_COLOURS, _SHAPES, _BGS = set(S.COLOURS), set(S.SHAPES), set(S.BACKGROUNDS)


def regions(scene: S.Scene, size: int) -> np.ndarray:
    """float32 [3, size, size]: area coverage of object 0, object 1 (zeros if absent) and the background."""
    out = np.zeros((3, size, size), dtype=np.float32)
    f = scene.size // size
    for i, o in enumerate(scene.objects):
        out[i] = S.coverage(o, scene.size).reshape(size, f, size, f).mean((1, 3))
    out[2] = np.clip(1.0 - out[0] - out[1], 0.0, 1.0)
    return out


def word_regions(prompt: str) -> np.ndarray:
    """int64 [77]: for each token position, the region its word names (0/1: objects, 2: background), -1 none.

    Positions follow the tokenizer: start token at 0, the i-th word at i + 1."""
    out = np.full(T.MAX_LENGTH, -1, dtype=np.int64)
    words = prompt.split()
    obj = -1
    for i, w in enumerate(words):
        if w in _COLOURS:
            obj += 1
            out[i + 1] = obj
        elif w in _SHAPES:
            out[i + 1] = obj
        elif w in _BGS or w == "background":
            out[i + 1] = 2
    return out


def swap_one_word(prompt: str, rng: np.random.Generator) -> tuple[str, list[int]]:
    """(prompt with one attribute word swapped, token positions allowed to change).

    An object's colour: the colour and its shape word; its shape: the shape word; the background's colour:
    that word and "background"."""
    words = prompt.split()
    slots = [i for i, w in enumerate(words) if w in _COLOURS or w in _SHAPES or w in _BGS]
    i = slots[rng.integers(len(slots))]
    w = words[i]
    pool = sorted(_COLOURS if w in _COLOURS else _SHAPES if w in _SHAPES else _BGS)
    pool.remove(w)
    words[i] = pool[rng.integers(len(pool))]
    changed = [i + 1]
    if w in _COLOURS or w in _BGS:
        changed.append(i + 2)  # the noun the colour modifies ("circle", "background")
    return " ".join(words), changed


def phrase_tie_batch(prompts: list[str], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(token ids of the prompts, of their one-word swaps, bool [B, 77] positions that must not change).

    Empty prompts (the dropout for classifier-free guidance) are paired with themselves."""
    swapped, keep = [], np.ones((len(prompts), T.MAX_LENGTH), dtype=bool)
    for b, p in enumerate(prompts):
        if not p:
            swapped.append(p)
            continue
        q, changed = swap_one_word(p, rng)
        swapped.append(q)
        keep[b, changed] = False
    return (torch.from_numpy(T.encode_batch(prompts)), torch.from_numpy(T.encode_batch(swapped)),
            torch.from_numpy(keep))


def phrase_tie_loss(ctx: torch.Tensor, ctx_swapped: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two encodings at the positions that must not change, per channel."""
    k = keep[..., None].to(ctx.dtype)
    return ((ctx - ctx_swapped) ** 2 * k).sum() / (k.sum() * ctx.shape[-1]).clamp_min(1.0)


def record_cross_attention(unet) -> list:
    """Puts exporter.attention's explicit processor on every cross-attention layer (attn2), keeping each call's
    probabilities with their gradient (mean over heads, [B, N, 77]) in the list it returns, for the grounding
    loss; self-attention keeps its processor."""
    store: list = []
    procs = {n: (ExplicitAttnProcessor(on_probs=lambda probs: store.append(probs.mean(1))) if ".attn2." in n else p)
             for n, p in unet.attn_processors.items()}
    unet.set_attn_processor(procs)
    return store


def grounding_loss(maps: list[torch.Tensor], regions_: torch.Tensor, token_region: torch.Tensor) -> torch.Tensor:
    """TokenCompose's token loss over the recorded maps.

    maps: [B, N, 77] per layer (N = r*r cells); regions_: [B, 3, R, R] area coverage at the latent size;
    token_region: [B, 77] region index per token, -1 for tokens without one."""
    has = token_region >= 0  # [B, 77]
    if not bool(has.any()):
        return maps[0].sum() * 0.0
    idx = token_region.clamp_min(0)
    losses = []
    for m in maps:
        r = int(round(m.shape[1] ** 0.5))
        reg = F.adaptive_avg_pool2d(regions_, r).flatten(2)  # [B, 3, N]
        tok_reg = torch.gather(reg, 1, idx[..., None].expand(-1, -1, reg.shape[-1]))  # [B, 77, N]
        a = m.transpose(1, 2)  # [B, 77, N]
        inside = (a * tok_reg).sum(-1) / a.sum(-1).clamp_min(1e-8)
        losses.append(((1.0 - inside) ** 2)[has].mean())
    return torch.stack(losses).mean()
