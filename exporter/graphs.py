"""The torch modules behind each graph of the model folder, with their ONNX I/O names and example inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import ControlInputs, ControlState, ExplicitAttnProcessor, attention_layout, use_explicit_attention

TOKENS = 77


class TextEncoder(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids=input_ids).last_hidden_state


class VaeEncoderMean(torch.nn.Module):
    """Image in [-1, 1] -> mean of the latent distribution, unscaled (docs/design.md §1: the mean, not a sample)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        h = self.vae.encoder(image)
        if self.vae.quant_conv is not None:
            h = self.vae.quant_conv(h)
        mean, _logvar = torch.chunk(h, 2, dim=1)
        return mean


class VaeDecoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]


class Unet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        use_explicit_attention(unet)

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def choose_map_resolution(cross_resolutions: set[int], latent_size: int) -> int:
    """Prompt-to-Prompt reads the latent/4 level (16x16 for SD at 512 px); small models need >= 8x8."""
    preferred = latent_size // 4
    if preferred in cross_resolutions and preferred >= 8:
        return preferred
    big_enough = sorted(r for r in cross_resolutions if r >= 8)
    return big_enough[0] if big_enough else max(cross_resolutions)


class ControlUnet(torch.nn.Module):
    """UNet with Prompt-to-Prompt control inputs (see attention.py) that also returns cross-attention maps.

    Batch layout [uncond x K, cond x K]. Returns (noise [2K,C,h,w], attention_maps [K, r, r, 77]): the
    conditional branches' cross-attention maps at resolution r, averaged over heads and the down/up layers.
    """

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        cfg = unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        sample = torch.zeros(1, cfg.in_channels, size, size)
        text = torch.zeros(1, TOKENS, cfg.cross_attention_dim)
        layout = attention_layout(unet, sample, torch.tensor([1]), text)
        self.layout = layout
        cross_res = {int(round(n ** 0.5)) for _, is_cross, n in layout if is_cross}
        self_tokens = [n for _, is_cross, n in layout if not is_cross]
        self.map_resolution = choose_map_resolution(cross_res, size)
        # Self-attention injection on every layer but the highest-resolution ones (docs/design.md §1).
        self.max_self_tokens = max(self_tokens)
        self.state = ControlState()
        map_tokens = self.map_resolution ** 2

        def records(name, is_cross, n):
            return is_cross and n == map_tokens and not name.startswith("mid_block")

        unet.set_attn_processor({
            name: ExplicitAttnProcessor(self.state, inject_self=(not is_cross and n < self.max_self_tokens),
                                        record_maps=records(name, is_cross, n), name=name)
            for name, is_cross, n in layout
        })
        self.map_layers = sum(1 for lay in layout if records(*lay))
        self.self_injected_layers = sum(1 for _, is_cross, n in layout if not is_cross and n < self.max_self_tokens)

    def forward(self, sample, timestep, encoder_hidden_states, mapper, alphas, reweight, cross_flag, self_flag):
        self.state.inputs = ControlInputs(mapper, alphas, reweight, cross_flag, self_flag)
        self.state.maps = []
        try:
            noise = self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]
            maps = torch.stack(self.state.maps, dim=0).mean(dim=0)
        finally:
            self.state.inputs = None
        k = reweight.shape[0]
        r = self.map_resolution
        return noise, maps.reshape(k, r, r, TOKENS)


@dataclass
class GraphSpec:
    name: str  # path inside the model folder
    module: torch.nn.Module
    inputs: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict | None


def _latent_shape(unet, batch: int):
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    return (batch, cfg.in_channels, size, size)


def control_example_inputs(unet, k: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text_dim = unet.config.cross_attention_dim
    # k = 3 so that no dynamic dimension is 1 in the example (the exporter would specialise it).
    mapper = torch.eye(TOKENS).expand(k - 1, TOKENS, TOKENS).clone()
    return (
        torch.randn(_latent_shape(unet, 2 * k), generator=g),
        torch.tensor([500], dtype=torch.int64),
        torch.randn((2 * k, TOKENS, text_dim), generator=g),
        mapper,
        torch.ones(k - 1, TOKENS),
        torch.ones(k, TOKENS),
        torch.zeros(1),
        torch.zeros(1),
    )


CONTROL_INPUTS = ["sample", "timestep", "encoder_hidden_states", "mapper", "alphas", "reweight", "cross_flag",
                  "self_flag"]
CONTROL_OUTPUTS = ["noise_pred", "attention_maps"]


def graph_specs(components, image_size: int) -> list[GraphSpec]:
    """Every forward graph of the folder; the gradient graph is traced separately (grad_graph.py)."""
    unet, vae, text = components.unet, components.vae, components.text_encoder
    g = torch.Generator().manual_seed(0)
    latent_ch = vae.config.latent_channels
    latent_size = image_size // (2 ** (len(vae.config.block_out_channels) - 1))
    text_dim = unet.config.cross_attention_dim
    ids = torch.randint(0, 10, (2, TOKENS), generator=g)
    return [
        GraphSpec("text_encoder/model.onnx", TextEncoder(text), (ids,), ["input_ids"], ["last_hidden_state"],
                  {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}}),
        GraphSpec("vae_encoder/model.onnx", VaeEncoderMean(vae),
                  (torch.rand(2, 3, image_size, image_size, generator=g) * 2 - 1,), ["image"], ["latent_mean"],
                  {"image": {0: "batch"}, "latent_mean": {0: "batch"}}),
        GraphSpec("vae_decoder/model.onnx", VaeDecoder(vae),
                  (torch.randn(2, latent_ch, latent_size, latent_size, generator=g),), ["latent"], ["image"],
                  {"latent": {0: "batch"}, "image": {0: "batch"}}),
        GraphSpec("unet/model.onnx", Unet(unet),
                  (torch.randn(_latent_shape(unet, 2), generator=g), torch.tensor([500], dtype=torch.int64),
                   torch.randn(2, TOKENS, text_dim, generator=g)),
                  ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
                  {"sample": {0: "batch"}, "encoder_hidden_states": {0: "batch"}, "out_sample": {0: "batch"}}),
    ]


def control_spec(unet) -> GraphSpec:
    module = ControlUnet(unet)
    dyn = {
        "sample": {0: "batch"},
        "encoder_hidden_states": {0: "batch"},
        "mapper": {0: "edits"},
        "alphas": {0: "edits"},
        "reweight": {0: "prompts"},
        "noise_pred": {0: "batch"},
        "attention_maps": {0: "prompts"},
    }
    return GraphSpec("unet/control.onnx", module, control_example_inputs(unet), CONTROL_INPUTS,
                     CONTROL_OUTPUTS, dyn)
