"""EDICT's reference (Wallace, Gokul, Naik, "EDICT: Exact Diffusion Inversion via Coupled Transformations",
CVPR 2023), over exporter/reference.py's Reference: two coupled latents whose DDIM updates use each other's
noise and are mixed with weight p, so each generation step can be inverted exactly (no pivots, no
optimisation). Epsilon prediction only. The engine's side is src/core/methods/edict.ts."""

from __future__ import annotations

import torch

from .reference import Reference

#: the paper's mixing weight
EDICT_MIX = 0.93


def _coefficients(ref: Reference, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x_prev = a x + b eps: the DDIM step from t to the previous level as a linear map of x and eps."""
    alpha_t, alpha_prev = ref.alpha(t), ref.alpha(t - ref.step_size)
    a = (alpha_prev / alpha_t).sqrt()
    b = (1 - alpha_prev).sqrt() - (alpha_prev * (1 - alpha_t) / alpha_t).sqrt()
    return a, b


@torch.no_grad()
def edict_inversion(ref: Reference, z0: torch.Tensor, cond, uncond, p: float = EDICT_MIX) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_T, y_T) from x_0 = y_0 = z0: each generation step undone, lowest timestep first."""
    if ref.prediction_type != "epsilon":
        raise ValueError("EDICT here needs an epsilon-prediction model")
    x, y = z0.clone(), z0.clone()
    for t in reversed(ref.timesteps):
        a, b = _coefficients(ref, t)
        y_inter = (y - (1 - p) * x) / p
        x_inter = (x - (1 - p) * y_inter) / p
        y = (y_inter - b * ref.guided_noise(x_inter, t, cond, uncond)) / a
        x = (x_inter - b * ref.guided_noise(y, t, cond, uncond)) / a
    return x, y


@torch.no_grad()
def edict_sample(ref: Reference, x: torch.Tensor, y: torch.Tensor, cond, uncond,
                 p: float = EDICT_MIX) -> tuple[torch.Tensor, torch.Tensor]:
    """The coupled generation from (x_T, y_T), highest timestep first; (x_0, y_0)."""
    for t in ref.timesteps:
        a, b = _coefficients(ref, t)
        x_inter = a * x + b * ref.guided_noise(y, t, cond, uncond)
        y_inter = a * y + b * ref.guided_noise(x_inter, t, cond, uncond)
        x = p * x_inter + (1 - p) * y_inter
        y = p * y_inter + (1 - p) * x
    return x, y
