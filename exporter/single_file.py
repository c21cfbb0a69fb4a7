"""Single-file checkpoints: `.safetensors` or `.ckpt` in the original Stable Diffusion (LDM) layout, as A1111,
ComfyUI and civitai share them, read offline into the exporter's Components.

Nothing is fetched: the architecture comes from the configs in exporter/configs.py (the family detected from
the weights, `--family` / `--config` to override), the weights are mapped with diffusers' own LDM converters,
and the tokenizer, which such files do not carry, is built from CLIP's byte-pair merges shipped in
exporter/assets/. A checkpoint's metadata may carry `prediction_type` (or `modelspec.prediction_type`) and
`clip_skip` (or kohya's `ss_clip_skip`); flags override both.

`to_ldm_layout` writes Components back in the original layout: the tests use it to check that a single-file
export gives the same graphs as the diffusers-folder export of the same weights.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from .configs import ARCHITECTURES, SD_SCHEDULER, Architecture, Components

CLIP_MERGES = Path(__file__).parent / "assets" / "clip_bpe_simple_vocab_16e6.txt.gz"
SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
#: the cross-attention keys of the first transformer block: their input width names the family
_CROSS_K = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_UNET, _VAE, _CLIP, _OPEN_CLIP = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.", \
    "cond_stage_model.model."
#: the configs a checkpoint of each family can be (full-size first; the rest are this project's test sizes)
FAMILY_CONFIGS = {"sd1": ("sd15", "sd15-256", "tiny"), "sd2": ("sd21", "sd21-tiny")}


class CheckpointError(SystemExit):
    """A checkpoint the exporter cannot read, with the reason in one line."""


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a .safetensors or a torch checkpoint (loaded without running pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickles with code in them, truncated files
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0]})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no state dict inside")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, {}


def detect_family(state: dict[str, torch.Tensor]) -> str:
    """sd2 for an OpenCLIP text tower or 1024-wide cross-attention, sd1 for CLIP's; an error for anything else."""
    if not any(k.startswith(_UNET) for k in state):
        raise CheckpointError("not a Stable Diffusion checkpoint in the original layout: no model.diffusion_model.* weights")
    if any(k.startswith(_OPEN_CLIP) for k in state) or (_CROSS_K in state and state[_CROSS_K].shape[-1] == 1024):
        return "sd2"
    if any(k.startswith(_CLIP) for k in state):
        return "sd1"
    raise CheckpointError("no text encoder weights (cond_stage_model.*): SDXL and other families are not read")


def _fits(arch: Architecture, state: dict[str, torch.Tensor]) -> bool:
    conv_in = state.get(_UNET + "input_blocks.0.0.weight")
    cross = state.get(_CROSS_K)
    return (conv_in is not None and conv_in.shape[0] == arch.unet["block_out_channels"][0]
            and (cross is None or cross.shape[-1] == arch.unet["cross_attention_dim"]))


def choose_architecture(state: dict[str, torch.Tensor], family: str, config: str | None) -> Architecture:
    if config is not None:
        if config not in ARCHITECTURES:
            raise CheckpointError(f"unknown --config {config!r}; known: {', '.join(ARCHITECTURES)}")
        return ARCHITECTURES[config]
    for name in FAMILY_CONFIGS[family]:
        if _fits(ARCHITECTURES[name], state):
            return ARCHITECTURES[name]
    width = state[_UNET + "input_blocks.0.0.weight"].shape[0]
    raise CheckpointError(f"a {family} checkpoint whose UNet starts with {width} channels matches none of the shipped "
                          f"configs ({', '.join(FAMILY_CONFIGS[family])}): pass --config")


def clip_tokenizer(pad_with_eos: bool):
    """CLIP's BPE tokenizer (49408 ids) from the shipped merges: SD 1.x pads with the end token, SD 2.x with '!'."""
    from .tokenizer import bytes_to_unicode, load_tokenizer

    lines = gzip.open(CLIP_MERGES).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    base = list(bytes_to_unicode().values())
    vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>" if pad_with_eos else "!", "model_max_length": 77}))
        return load_tokenizer(folder)


def _text_config(arch: Architecture, embedding: torch.Tensor, layers: int, tokenizer):
    from transformers import CLIPTextConfig

    vocab = tokenizer.get_vocab()
    return CLIPTextConfig(vocab_size=embedding.shape[0], max_position_embeddings=77,
                          **{**arch.text, "hidden_size": embedding.shape[1], "num_hidden_layers": layers},
                          bos_token_id=vocab.get("<|startoftext|>", 0), eos_token_id=vocab.get("<|endoftext|>", 0),
                          pad_token_id=tokenizer.padding["pad_id"] if tokenizer.padding else 0)


def _drop_prefix(d: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in d.items()}


def _text_encoder(state, family: str, arch: Architecture, tokenizer, clip_skip: int):
    """The text tower as a CLIPTextModel ending where the family reads it: SD 2.x at OpenCLIP's penultimate layer,
    SD 1.x at the last, or `clip_skip - 1` layers earlier (A1111's "clip skip": the final layer norm kept)."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextModel

    if family == "sd2":
        prefix = _OPEN_CLIP
        embedding = state[prefix + "token_embedding.weight"]
        layers = len({k.split(".")[3] for k in state if k.startswith(prefix + "transformer.resblocks.")})
        model = CLIPTextModel(_text_config(arch, embedding, layers, tokenizer))
        weights = convert_open_clip_checkpoint(model, state)
        drop = 1 + max(0, clip_skip - 1)
    else:
        embedding = state[_CLIP + "text_model.embeddings.token_embedding.weight"]
        layers = len({k.split(".")[5] for k in state if k.startswith(_CLIP + "text_model.encoder.layers.")})
        model = CLIPTextModel(_text_config(arch, embedding, layers, tokenizer))
        weights = convert_ldm_clip_checkpoint(state)
        drop = max(0, clip_skip - 1)
    own = model.state_dict()
    if not any(k.startswith("text_model.") for k in own):  # transformers 5 dropped the text_model level
        weights = _drop_prefix(weights, "text_model.")
    weights = {k: v for k, v in weights.items() if k in own}
    missing = sorted(set(own) - set(weights) - {"embeddings.position_ids", "text_model.embeddings.position_ids"})
    if missing:
        raise CheckpointError(f"the text encoder lacks {len(missing)} weights, e.g. {missing[0]}")
    model.load_state_dict(weights, strict=False)
    if drop:
        if drop >= layers:
            raise CheckpointError(f"clip skip {clip_skip} leaves no layer of the text encoder's {layers}")
        encoder = getattr(model, "text_model", model).encoder
        encoder.layers = encoder.layers[: layers - drop]
        model.config.num_hidden_layers = layers - drop
    return model.eval()


def load_single_file(path: Path, family: str | None = None, config: str | None = None,
                     prediction_type: str | None = None, clip_skip: int | None = None) -> Components:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from .tokenizer import build_word_tokenizer

    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise CheckpointError(f"{path}: a single-file checkpoint ends in {', '.join(SUFFIXES)}")
    state, meta = read_checkpoint(path)
    family = family or detect_family(state)
    arch = choose_architecture(state, family, config)
    if clip_skip is None:
        clip_skip = int(meta.get("clip_skip") or meta.get("ss_clip_skip") or 1)
    prediction_type = (prediction_type or meta.get("prediction_type") or meta.get("modelspec.prediction_type")
                       or arch.prediction_type)
    prediction_type = {"eps": "epsilon", "v": "v_prediction"}.get(prediction_type, prediction_type)
    if prediction_type not in ("epsilon", "v_prediction"):
        raise CheckpointError(f"prediction type {prediction_type!r}: epsilon or v_prediction")

    unet = UNet2DConditionModel(**arch.unet)
    unet.load_state_dict(convert_ldm_unet_checkpoint(state, dict(unet.config)), strict=True)
    vae = AutoencoderKL(**arch.vae)
    vae.load_state_dict(convert_ldm_vae_checkpoint(state, dict(vae.config)), strict=True)
    if arch.word_vocab:  # this project's test configs: their word-level vocabulary, as build_random makes it
        tokenizer, _ = build_word_tokenizer(pad_with_eos=arch.pad_with_eos)
    else:
        tokenizer = clip_tokenizer(arch.pad_with_eos)
    text_encoder = _text_encoder(state, family, arch, tokenizer, clip_skip)
    scheduler = DDIMScheduler(prediction_type=prediction_type, **SD_SCHEDULER)
    for m in (unet, vae):
        m.eval()
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                      scheduler_config=dict(scheduler.config), image_size=arch.image_size,
                      source=f"single-file:{path.name}:{arch.name}", licence="unknown: see the checkpoint's source",
                      model_name=path.stem)


# ---- the other way: Components -> the original layout (for tests and for sharing a model) -------------------


def _unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    cfg = unet.config
    per = cfg.layers_per_block
    resnet = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
              ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."), ("conv_shortcut.", "skip_connection.")]
    prefixes = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
                ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
                ("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."),
                ("mid_block.resnets.1.", "middle_block.2.")]
    for i, up_type in enumerate(cfg.up_block_types):
        for j in range(per):
            prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{1 + i * (per + 1) + j}.0."))
            prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{1 + i * (per + 1) + j}.1."))
        prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (per + 1)}.0.op."))
        for j in range(per + 1):
            prefixes.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * (per + 1) + j}.0."))
            prefixes.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * (per + 1) + j}.1."))
        upsampler = 2 if "CrossAttn" in up_type else 1
        prefixes.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * (per + 1) + per}.{upsampler}."))
    out = {}
    for key, value in unet.state_dict().items():
        hf, ldm = next(((h, m) for h, m in prefixes if key.startswith(h)), (None, None))
        if hf is None:
            raise KeyError(f"no original-layout name for the UNet's {key}")
        rest = key[len(hf):]
        if ".resnets." in hf:
            rest = next((m + rest[len(h):] for h, m in resnet if rest.startswith(h)), rest)
        out[_UNET + ldm + rest] = value
    return out


def _vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    n = len(vae.config.block_out_channels)
    prefixes = []
    for part in ("encoder", "decoder"):
        for j in range(2):
            prefixes.append((f"{part}.mid_block.resnets.{j}.", f"{part}.mid.block_{j + 1}."))
        prefixes.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
        prefixes.append((f"{part}.conv_norm_out.", f"{part}.norm_out."))
    for i in range(n):
        prefixes.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        prefixes.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        prefixes.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."))
        prefixes.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample."))
    attention = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]
    out = {}
    for key, value in vae.state_dict().items():
        name = key
        hf, ldm = next(((h, m) for h, m in prefixes if key.startswith(h)), (None, None))
        if hf is not None:
            rest = key[len(hf):]
            if ldm.endswith("attn_1."):
                rest = next((m + rest[len(h):] for h, m in attention if rest.startswith(h)), rest)
                if value.ndim == 2:  # the original's attention projections are 1x1 convolutions
                    value = value[:, :, None, None]
            name = ldm + rest
        out[_VAE + name.replace("conv_shortcut.", "nin_shortcut.")] = value
    return out


def to_ldm_layout(c: Components) -> dict[str, torch.Tensor]:
    """UNet, VAE and an SD 1.x-style (CLIP) text encoder under their original names."""
    text = {_CLIP + ("" if k.startswith("text_model.") else "text_model.") + k: v
            for k, v in c.text_encoder.state_dict().items() if not k.endswith("position_ids")}
    return {k: v.contiguous() for k, v in {**_unet_to_ldm(c.unet), **_vae_to_ldm(c.vae), **text}.items()}


def write_checkpoint(c: Components, path: Path, metadata: dict[str, Any] | None = None) -> None:
    from safetensors.torch import save_file

    save_file(to_ldm_layout(c), str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
