"""Configurations of the shapes-tiny model: diffusers/transformers classes of SD 1.x's architecture, small."""

from __future__ import annotations

from typing import Any

from ..configs import SD_SCHEDULER
from . import tokenizer as T

IMAGE_SIZE = 64
LATENT_SIZE = 16  # VAE downsamples by 4 (3 blocks)
TEXT_HIDDEN = 128

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 64],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=IMAGE_SIZE,
    scaling_factor=1.0,  # replaced after training: 1 / std of the encoder-mean latents
)

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=LATENT_SIZE,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64, 64],
    layers_per_block=1,
    cross_attention_dim=TEXT_HIDDEN,
    attention_head_dim=4,  # diffusers' legacy name: this is the number of heads (4 heads of 16 channels)
    norm_num_groups=8,
)

#: Where the UNet attends. "v1" is the shipped model's: attention at 8x8 and 4x4, none at the latent's own
#: 16x16. "sd" follows SD 1.x's pattern over three levels: cross-attention at every level but the coarsest
#: (16x16 and 8x8; the mid block too), so Prompt-to-Prompt controls the finest features as it does in SD.
UNET_LAYOUTS: dict[str, dict[str, list[str]]] = {
    "v1": dict(down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
               up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]),
    "sd": dict(down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
               up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
}

TEXT_CONFIG: dict[str, Any] = dict(
    vocab_size=T.VOCAB_SIZE,
    hidden_size=TEXT_HIDDEN,
    intermediate_size=4 * TEXT_HIDDEN,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=T.MAX_LENGTH,
    hidden_act="quick_gelu",
    projection_dim=TEXT_HIDDEN,
    bos_token_id=T.BOS_ID,
    eos_token_id=T.EOS_ID,
    pad_token_id=T.PAD_ID,
)

#: Scheduler shipped in scheduler/scheduler_config.json (as SD 1.x's, DDIM).
DDIM_CONFIG: dict[str, Any] = dict(SD_SCHEDULER, prediction_type="epsilon")

#: Training noise schedule: exactly SD's.
DDPM_CONFIG: dict[str, Any] = {k: DDIM_CONFIG[k] for k in (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "clip_sample")}


def build_vae(**over):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{**VAE_CONFIG, **over})


def build_unet(layout: str = "v1", **over):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**UNET_CONFIG, **UNET_LAYOUTS[layout], **over})


def build_text_encoder(**over):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**{**TEXT_CONFIG, **over}))


def ddpm_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**DDPM_CONFIG)


def ddim_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**DDIM_CONFIG)


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())
