"""Attention processors for export: explicit softmax attention, and Prompt-to-Prompt control.

Why our own processors:
- `F.scaled_dot_product_attention` has no ONNX mapping for its backward, and its math fallback bakes
  attention-sized constants into traced graphs; explicit `softmax(q k^T * scale) v` traces into MatMul +
  Softmax and differentiates into standard ops.
- Prompt-to-Prompt must read and overwrite the attention probabilities inside every attention layer.

Control semantics (docs/design.md §1), applied to the conditional half of the batch [uncond x K, cond x K] only.
For conditional branch k (k = 0 is the source prompt) with own cross-attention P_k, source P_0:

    cross:  P_k' = (M_k(P_0) * a_k + P_k * (1 - a_k)) * r_k * c + P_k * (1 - c)
    self:   P_k' = P_0 * s + P_k * (1 - s)          (k >= 1, all but the highest-resolution layers)

M_k(P) = P @ mapper[k-1] maps source tokens to edited tokens (a permutation-like [77,77] matrix covers
replace and refine; the identity for k = 0), a_k are refine's per-token blend weights (all ones for
replace; ones for k = 0), r_k the reweight factors, c the cross-injection flag and s the self-injection
flag of this step. With c = s = 0 the UNet is the plain UNet. This equals the reference's
AttentionReplace / AttentionRefine / AttentionReweight (reweight applied to the injected maps, so it
stops with cross injection, as there).

Cross-attention maps are recorded before control (as the reference's AttentionStore does), averaged over
heads and over the down and up blocks' cross-attention layers at the chosen resolution (the mid block is
left out, as Prompt-to-Prompt's local blend does), for the K conditional branches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention


@dataclass
class ControlInputs:
    mapper: torch.Tensor  # [K-1, T, T]
    alphas: torch.Tensor  # [K-1, T]
    reweight: torch.Tensor  # [K, T]
    cross_flag: torch.Tensor  # [1]
    self_flag: torch.Tensor  # [1]


@dataclass
class ControlState:
    """Shared by all processors of one UNet; set per forward call by the wrapper."""

    inputs: ControlInputs | None = None
    maps: list[torch.Tensor] = field(default_factory=list)
    seen: dict[str, tuple[bool, int]] = field(default_factory=dict)  # name -> (is_cross, N), dry run
    record_shapes: bool = False


def _explicit_probs(attn: Attention, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    if attn.upcast_attention:
        query, key = query.float(), key.float()
    scores = torch.matmul(query, key.transpose(-1, -2)) * attn.scale
    if attn.upcast_softmax:
        scores = scores.float()
    return scores.softmax(dim=-1)


class _SoftmaxAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v with a backward written for the gradient graph, where the attention matrix
    [heads, N, N] is the largest tensor (at SD's 64x64 latent, 512 MB a self-attention layer):
    - the scale multiplies q (and the gradient of q), not the matrix, in both directions;
    - softmax's backward takes the row sums of dP * P as rowsum(dO * O), as FlashAttention does
      (Dao et al., 2022, appendix B.2), on [N, d] tensors instead of [N, N] ones.
    Autograd's own backward makes four passes over the matrix besides the matmuls (two scalings, dP * P and
    the subtraction); this one makes two (dP - D and the product with P). The maths is the same."""

    @staticmethod
    def forward(ctx, query, key, value, scale: float):
        scaled = query * scale
        probs = torch.matmul(scaled, key.transpose(-1, -2)).softmax(dim=-1)
        out = torch.matmul(probs, value)
        ctx.save_for_backward(scaled, key, value, probs, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        scaled, key, value, probs, out = ctx.saved_tensors
        grad_value = torch.matmul(probs.transpose(-1, -2), grad_out)
        grad_probs = torch.matmul(grad_out, value.transpose(-1, -2))
        row = (grad_out * out).sum(dim=-1, keepdim=True)  # = rowsum(grad_probs * probs)
        grad_scores = probs * (grad_probs - row)
        grad_query = torch.matmul(grad_scores, key) * ctx.scale
        grad_key = torch.matmul(grad_scores.transpose(-1, -2), scaled)
        return grad_query, grad_key, grad_value, None


class ExplicitAttnProcessor:
    """diffusers' AttnProcessor maths with a plain matmul + softmax, optionally under P2P control.

    `compact_backward`: attention through _SoftmaxAttention (for the traced gradient graph; no control, no
    probabilities handed out)."""

    def __init__(self, state: ControlState | None = None, inject_self: bool = False, record_maps: bool = False,
                 name: str = "", on_probs=None, compact_backward: bool = False):
        if compact_backward and (state is not None or on_probs is not None):
            raise ValueError("the compact backward hides the probabilities that control and on_probs read")
        self.compact_backward = compact_backward
        self.state = state
        self.inject_self = inject_self
        self.record_maps = record_maps
        self.name = name
        self.on_probs = on_probs  # called with each call's probabilities [B, heads, N, M] (training losses)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise NotImplementedError("attention masks are not used by SD UNets")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        is_cross = encoder_hidden_states is not None
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        bsz, n_q, _ = query.shape
        heads = attn.heads
        # [B, heads, N, d]
        query = query.view(bsz, n_q, heads, -1).transpose(1, 2)
        key = key.view(bsz, key.shape[1], heads, -1).transpose(1, 2)
        value = value.view(bsz, value.shape[1], heads, -1).transpose(1, 2)

        upcast = attn.upcast_attention or attn.upcast_softmax
        if self.compact_backward and not upcast:
            hidden_states = _SoftmaxAttention.apply(query, key, value, attn.scale)
        elif self._untouched_by_control(is_cross) and not upcast:
            # The control UNet's self-attention layers that nothing injects into: the same maths, traced by
            # the exporter's SDPA symbolic into MatMul + Softmax, while the trace's own forward (batch 6 at
            # export) never holds the [heads, N, N] matrices (3.2 GB each at SD's 64x64).
            hidden_states = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        else:
            probs = _explicit_probs(attn, query, key).to(value.dtype)
            if self.on_probs is not None:
                self.on_probs(probs)
            if self.state is not None:
                probs = self._control(probs, is_cross, n_q)
            hidden_states = torch.matmul(probs, value)
        hidden_states = hidden_states.transpose(1, 2).reshape(bsz, n_q, -1)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _untouched_by_control(self, is_cross: bool) -> bool:
        state = self.state
        return (state is not None and not state.record_shapes and not is_cross and not self.inject_self
                and self.on_probs is None)

    def _control(self, probs: torch.Tensor, is_cross: bool, n_q: int) -> torch.Tensor:
        state = self.state
        if state.record_shapes:
            state.seen[self.name] = (is_cross, n_q)
        ctl = state.inputs
        if ctl is None or not (is_cross or self.inject_self):
            return probs  # untouched layers: no split/stack copies of (large) self-attention maps
        # [2, K, heads, N, M]: reshaping (not slicing by K) keeps the batch dimension symbolic on export.
        halves = probs.reshape(2, -1, *probs.shape[1:])
        uncond, cond = halves[0], halves[1]
        if is_cross:
            if self.record_maps:
                state.maps.append(cond.mean(dim=1))  # [K, N, T], before control
            base = cond[:1]
            edit = cond[1:]
            mapped = torch.einsum("hpw,bwn->bhpn", base[0], ctl.mapper)
            alphas = ctl.alphas[:, None, None, :]
            mixed = torch.cat([base, mapped * alphas + edit * (1 - alphas)], dim=0)
            mixed = mixed * ctl.reweight[:, None, None, :]
            cond = mixed * ctl.cross_flag + cond * (1 - ctl.cross_flag)
        elif self.inject_self:
            base = cond[:1]
            edit = base * ctl.self_flag + cond[1:] * (1 - ctl.self_flag)
            cond = torch.cat([base, edit], dim=0)
        return torch.stack([uncond, cond], dim=0).reshape(probs.shape)


def use_explicit_attention(unet: torch.nn.Module, compact_backward: bool = False) -> None:
    """Explicit attention in every layer; `compact_backward` for the traced gradient graph."""
    unet.set_attn_processor(ExplicitAttnProcessor(compact_backward=compact_backward))


def attention_layout(unet: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor,
                     text: torch.Tensor) -> list[tuple[str, bool, int]]:
    """(processor name, is_cross, tokens N) of every attention layer, from one recorded forward pass."""
    state = ControlState(record_shapes=True)
    names = list(unet.attn_processors.keys())
    unet.set_attn_processor({n: ExplicitAttnProcessor(state, name=n) for n in names})
    with torch.no_grad():
        unet(sample, timestep, text)
    if set(state.seen) != set(names):
        raise RuntimeError("attention layers were not all visited")
    return [(n, *state.seen[n]) for n in names]
