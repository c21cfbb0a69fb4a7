"""Named Stable-Diffusion-style architectures, built with random weights.

No weights can be downloaded where this project is built and tested, so every export path is exercised
on randomly initialised models of the real architectures: `sd15` (SD 1.5 at full size), `sd21` (the
SD 2.1 architecture with v-prediction, at the 512 px base size to keep CPU exports affordable), `sd21-tiny`
(SD 2.x's block features at test size, for the parity tests) and
`tiny` (same block types, a few thousand parameters, exports in seconds) and `sd15-256` (SD 1.5's block
layout and text encoder at 256 px with a fifth of the UNet's channels: the mid-size model of the benchmarks,
whose inversion runs in minutes on a CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import build_word_tokenizer

# docs/design.md §1: DDIM over SD's training schedule.
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


@dataclass
class Architecture:
    name: str
    description: str
    image_size: int
    prediction_type: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    # CLIP pads SD 1.x prompts with the end token and SD 2.x prompts with "!" (id 0).
    pad_with_eos: bool = True
    # A word-level vocabulary of the test prompts instead of CLIP's 49408 ids: keeps the text encoder's
    # embedding table, and so committed test fixtures, small.
    word_vocab: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


_SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

_SD_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
)

# CLIP ViT-L/14's text tower, as SD 1.x uses it.
_SD15_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    hidden_act="quick_gelu",
    projection_dim=768,
)

# The tiny test model's blocks (a few thousand parameters; exports in seconds).
_TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[16, 32],
    layers_per_block=1,
    attention_head_dim=8,
    cross_attention_dim=32,
    norm_num_groups=8,
)
_TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[8, 16, 16],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=64,
    scaling_factor=0.5,
)
_TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    hidden_act="quick_gelu",
    projection_dim=32,
)

ARCHITECTURES: dict[str, Architecture] = {
    "tiny": Architecture(
        name="tiny",
        description="tiny random SD-architecture model (test only)",
        image_size=64,
        prediction_type="epsilon",
        word_vocab=True,
        unet=_TINY_UNET,
        vae=_TINY_VAE,
        text=_TINY_TEXT,
    ),
    "sd15": Architecture(
        name="sd15",
        description="Stable Diffusion 1.5 architecture, random weights",
        image_size=512,
        prediction_type="epsilon",
        unet=_SD_UNET,
        vae=_SD_VAE,
        text=_SD15_TEXT,
    ),
    "sd15-256": Architecture(
        name="sd15-256",
        description="SD 1.5 block layout at 256 px with 1/5 of the UNet channels, random weights (benchmarks)",
        image_size=256,
        prediction_type="epsilon",
        unet={**_SD_UNET, "sample_size": 32, "block_out_channels": [64, 128, 256, 256]},
        vae={**_SD_VAE, "sample_size": 256, "block_out_channels": [32, 64, 128, 128]},
        text=_SD15_TEXT,
    ),
    "sd21": Architecture(
        name="sd21",
        description="Stable Diffusion 2.1 architecture (v-prediction) at 512 px, random weights",
        image_size=512,
        prediction_type="v_prediction",
        unet={**_SD_UNET, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
              "use_linear_projection": True, "upcast_attention": True},
        vae=_SD_VAE,
        text=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            hidden_act="gelu",
            projection_dim=512,
        ),
        pad_with_eos=False,
    ),
    "sd21-tiny": Architecture(
        name="sd21-tiny",
        description="SD 2.x's block features at tiny size (test only): v-prediction, linear projections in and out "
                    "of the transformer blocks, attention upcast to fp32, heads per level, GELU text tower, padding with "
                    "'!' instead of the end token; 64 px for SD 2.1's 768",
        image_size=64,
        prediction_type="v_prediction",
        # heads per level, as SD 2.x's [5, 10, 20, 20] (head size 64 there, 8 here)
        unet={**_TINY_UNET, "attention_head_dim": [2, 4], "use_linear_projection": True, "upcast_attention": True},
        vae=_TINY_VAE,
        text={**_TINY_TEXT, "hidden_act": "gelu"},
        pad_with_eos=False,
        word_vocab=True,
    ),
}


@dataclass
class Components:
    """What the exporter needs from a diffusers pipeline, however it was obtained."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: Any  # tokenizers.Tokenizer
    scheduler_config: dict[str, Any]
    image_size: int
    source: str
    licence: str
    model_name: str


def build_random(arch_name: str, seed: int = 0) -> Components:
    if arch_name not in ARCHITECTURES:
        raise SystemExit(f"unknown config {arch_name!r}; known: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[arch_name]
    torch.manual_seed(seed)
    big_vocab = not arch.word_vocab
    tokenizer, specials = build_word_tokenizer(clip_ids=big_vocab, pad_with_eos=arch.pad_with_eos)
    vocab_size = 49408 if big_vocab else tokenizer.get_vocab_size()
    text_cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        max_position_embeddings=77,
        bos_token_id=specials["bos"],
        eos_token_id=specials["eos"],
        pad_token_id=specials["pad"],
        **arch.text,
    )
    text_encoder = CLIPTextModel(text_cfg)
    unet = UNet2DConditionModel(**arch.unet)
    vae = AutoencoderKL(**arch.vae)
    # Random weights give a decoder whose output explodes; that is fine for shapes, parity and timing.
    for m in (unet, vae, text_encoder):
        m.eval()
    scheduler = DDIMScheduler(prediction_type=arch.prediction_type, **SD_SCHEDULER)
    return Components(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=dict(scheduler.config),
        image_size=arch.image_size,
        source=f"random:{arch.name}:seed={seed}",
        licence="MIT (random weights, no training data)",
        model_name=f"random-{arch.name}",
    )


def save_diffusers(c: Components, out: Path, provenance: dict[str, Any]) -> None:
    """Write `c` as a diffusers pipeline folder (what `load_diffusers` reads), so the PyTorch reference can
    run on exactly the weights an ONNX folder was exported from."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "vae", "text_encoder"):
        getattr(c, name).save_pretrained(out / name)
    (out / "tokenizer").mkdir(exist_ok=True)
    (out / "tokenizer" / "tokenizer.json").write_text(c.tokenizer.to_str())
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDIMScheduler", **c.scheduler_config}, indent=2, default=str))
    (out / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", **provenance}, indent=2))
