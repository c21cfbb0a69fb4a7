"""The null-text gradient graph: one inner step of null-text optimization, forward + backward, as ONNX.

onnxruntime-node has no autograd, so d loss / d null_embedding through the UNet is traced here into
plain ONNX ops. Exporting a module that calls `torch.autograd.grad` with the dynamo exporter fails
(fake-tensor constants), so we trace the whole step with `make_fx` on real tensors, decomposing the
backward ops that have no ONNX mapping into forward ops:
- `convolution_backward` -> `conv_transpose2d` (input gradient only: weights are frozen);
- `upsample_nearest2d_backward` -> reshape + sum (integer scale factors, as in SD's upsamplers);
and with explicit softmax attention, its backward written out (attention.py). The traced graph is then
exported through `torch.export` + the dynamo ONNX exporter. Shapes are static; t, w and the alphas are inputs.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
import torch.nn.functional as F
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

from .attention import use_explicit_attention
from .ddim import ddim_step

aten = torch.ops.aten

GRAD_INPUTS = ["latent", "timestep", "null_embedding", "cond_noise", "target", "guidance", "alpha_t", "alpha_prev"]
GRAD_OUTPUTS = ["loss", "grad", "latent_prev", "uncond_noise"]


def _conv_backward_input_only(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                              output_padding, groups, output_mask):
    if output_mask[1] or output_mask[2] or transposed:
        raise NotImplementedError("only the input gradient of a frozen, non-transposed conv is supported")
    if not output_mask[0]:
        return None, None, None
    dims = input.dim() - 2
    if dims != 2:
        raise NotImplementedError("only 2-D convolutions are supported")
    out_pad = []
    for d in range(dims):
        k = weight.shape[2 + d]
        full = (grad_output.shape[2 + d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (k - 1) + 1
        out_pad.append(input.shape[2 + d] - full)
    grad_input = F.conv_transpose2d(grad_output, weight, None, stride, padding, out_pad, groups, dilation)
    return grad_input, None, None


def _upsample_nearest2d_backward(grad_output, output_size, input_size, scales_h=None, scales_w=None):
    n, c, h, w = input_size
    oh, ow = output_size
    if oh % h or ow % w:
        raise NotImplementedError("nearest upsampling backward needs integer scale factors")
    sh, sw = oh // h, ow // w
    return grad_output.reshape(n, c, h, sh, w, sw).sum(dim=(3, 5))


def decompositions() -> dict:
    table = dict(core_aten_decompositions())
    table[aten.convolution_backward.default] = _conv_backward_input_only
    table[aten.upsample_nearest2d_backward.default] = _upsample_nearest2d_backward
    return table


def null_text_step(unet, prediction_type: str, latent, timestep, null_embedding, cond_noise, target, guidance,
                   alpha_t, alpha_prev):
    """uncond UNet -> classifier-free guidance -> DDIM step -> MSE to the pivot (docs/design.md §1)."""
    uncond = unet(latent, timestep, null_embedding, return_dict=False)[0]
    guided = uncond + guidance * (cond_noise - uncond)
    latent_prev = ddim_step(guided, latent, alpha_t, alpha_prev, prediction_type)
    loss = F.mse_loss(latent_prev, target)
    return loss, latent_prev, uncond


class NullTextGrad(torch.nn.Module):
    """Eager version of the graph (for checks): returns (loss, grad, latent_prev, uncond_noise)."""

    def __init__(self, unet, prediction_type: str):
        super().__init__()
        self.unet = unet
        self.prediction_type = prediction_type

    def forward(self, latent, timestep, null_embedding, cond_noise, target, guidance, alpha_t, alpha_prev):
        with torch.enable_grad():
            emb = null_embedding.detach().requires_grad_(True)
            loss, latent_prev, uncond = null_text_step(
                self.unet, self.prediction_type, latent, timestep, emb, cond_noise, target, guidance, alpha_t,
                alpha_prev)
            (grad,) = torch.autograd.grad(loss, emb)
        return loss.reshape(1), grad, latent_prev.detach(), uncond.detach()


def example_inputs(unet, batch_text_len: int = 77, seed: int = 0) -> tuple[torch.Tensor, ...]:
    cfg = unet.config
    g = torch.Generator().manual_seed(seed)
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    shape = (1, cfg.in_channels, size, size)
    return (
        torch.randn(shape, generator=g),
        torch.tensor([500], dtype=torch.int64),
        torch.randn((1, batch_text_len, cfg.cross_attention_dim), generator=g),
        torch.randn(shape, generator=g),
        torch.randn(shape, generator=g),
        torch.tensor([7.5]),
        torch.tensor([0.3]),
        torch.tensor([0.32]),
    )


def trace(unet, prediction_type: str, inputs: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    unet.requires_grad_(False)
    use_explicit_attention(unet, compact_backward=True)
    module = NullTextGrad(unet, prediction_type)
    return make_fx(module, decomposition_table=decompositions())(*inputs)


def call_targets(gm: torch.fx.GraphModule) -> Counter:
    return Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_function")


def export(unet, prediction_type: str, path, inputs=None, opset: int = 18):
    """Trace and write the ONNX graph; returns the example inputs used."""
    inputs = inputs if inputs is not None else example_inputs(unet)
    gm = trace(unet, prediction_type, inputs)
    backward_ops = [t for t in call_targets(gm) if "backward" in t]
    if backward_ops:
        raise RuntimeError(f"backward ops left in the traced graph (no ONNX mapping): {backward_ops}")
    ep = torch.export.export(gm, inputs, strict=False)
    from .onnx_io import export_program

    # the dynamo exporter warns about every torchvision op it cannot register; we use none
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

    export_program(ep, path, GRAD_INPUTS, GRAD_OUTPUTS, opset=opset)
    return inputs
