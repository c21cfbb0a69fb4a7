"""DDIM maths shared by the gradient graph and the reference (eta = 0)."""

from __future__ import annotations


def split_prediction(model_out, latent, alpha_t, prediction_type: str):
    """(predicted x0, predicted noise) from the model output at cumulative alpha alpha_t."""
    sqrt_a = alpha_t.sqrt()
    sqrt_1ma = (1 - alpha_t).sqrt()
    if prediction_type == "epsilon":
        eps = model_out
        x0 = (latent - sqrt_1ma * eps) / sqrt_a
    elif prediction_type == "v_prediction":
        x0 = sqrt_a * latent - sqrt_1ma * model_out
        eps = sqrt_a * model_out + sqrt_1ma * latent
    else:
        raise ValueError(f"unsupported prediction type {prediction_type!r}")
    return x0, eps


def ddim_step(model_out, latent, alpha_t, alpha_next, prediction_type: str):
    """Move a latent from cumulative alpha alpha_t to alpha_next along the deterministic DDIM path.

    The same formula runs the sampler (alpha_next = alpha of the previous timestep) and the inversion
    (alpha_next = alpha of the next, noisier timestep).
    """
    x0, eps = split_prediction(model_out, latent, alpha_t, prediction_type)
    return alpha_next.sqrt() * x0 + (1 - alpha_next).sqrt() * eps
