"""Word-level, CLIP-like tokenizer over the shapes grammar (HF `tokenizers` format).

Layout follows CLIP (and exporter/tokenizer.py): words first, then ``<|unk|>``, then the start and end
tokens as the two highest ids (CLIP has them at 49406/49407); 77 positions; prompts become
``<|startoftext|> words... <|endoftext|>`` and are padded to 77 with ``<|endoftext|>`` as SD 1.x does.
Only components the engine's tokenizer reader understands are used: NFC + Lowercase normaliser,
Whitespace pre-tokenizer, WordLevel model, TemplateProcessing post-processor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..tokenizer import build_word_tokenizer
from .scenes import VOCAB

MAX_LENGTH = 77
BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"

_VOCAB: dict[str, int] = {w: i for i, w in enumerate(VOCAB)}
UNK_ID = len(_VOCAB)
BOS_ID = UNK_ID + 1
EOS_ID = UNK_ID + 2
PAD_ID = EOS_ID
VOCAB_SIZE = EOS_ID + 1
SPECIAL_IDS = {"bos": BOS_ID, "eos": EOS_ID, "pad": PAD_ID, "unk": UNK_ID}


def vocab() -> dict[str, int]:
    v = dict(_VOCAB)
    v[UNK], v[BOS], v[EOS] = UNK_ID, BOS_ID, EOS_ID
    return v


def build_tokenizer() -> Tokenizer:
    tok, specials = build_word_tokenizer(VOCAB)
    assert specials == SPECIAL_IDS, specials
    return tok


_TOK: Tokenizer | None = None


def _tok() -> Tokenizer:
    global _TOK
    if _TOK is None:
        _TOK = build_tokenizer()
    return _TOK


def save(path: str | Path) -> Path:
    """Write ``tokenizer.json`` (path may be the file or a folder) plus, in a folder, the
    ``tokenizer_config.json`` / ``special_tokens_map.json`` that transformers'
    ``PreTrainedTokenizerFast.from_pretrained`` (and so a diffusers pipeline) needs."""
    path = Path(path)
    if path.suffix == ".json":
        folder, file = path.parent, path
    else:
        folder, file = path, path / "tokenizer.json"
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(file), pretty=True)
    if file.name == "tokenizer.json":
        cfg = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": MAX_LENGTH,
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": EOS,
            "unk_token": UNK,
            "padding_side": "right",
            "truncation_side": "right",
            "model_input_names": ["input_ids", "attention_mask"],
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        smap = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": UNK}
        (folder / "special_tokens_map.json").write_text(json.dumps(smap, indent=2) + "\n")
    return file


def encode_batch(prompts: list[str] | tuple[str, ...]) -> np.ndarray:
    """int64 [B, 77]."""
    enc = _tok().encode_batch(list(prompts))
    return np.array([e.ids for e in enc], dtype=np.int64)


def decode(ids) -> str:
    """Words of one row of ids, special tokens dropped."""
    return _tok().decode([int(i) for i in ids], skip_special_tokens=True)
