"""Tokenizers in the HF `tokenizers` JSON format the engine reads (`tokenizer/tokenizer.json`).

Real SD folders carry CLIP's BPE tokenizer (vocab.json + merges.txt, or tokenizer.json); random
architectures get a small word-level tokenizer laid out like CLIP's (start/end tokens, 77 positions,
padding), since CLIP's vocabulary cannot be downloaded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

MAX_LENGTH = 77
BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"

# Enough words for prompts used by tests of random models; shapes-tiny has its own grammar.
WORDS = (
    "a an the of on in with and photo picture painting drawing cat dog horse bird tree house car "
    "mountain lake river sky sea beach forest city street flower field man woman child red green "
    "blue yellow orange purple white black gray brown pink big small fluffy wooden old new circle "
    "square triangle background sitting standing running snow sunset night day"
).split()


def build_word_tokenizer(
    words: list[str] | tuple[str, ...] = tuple(WORDS), *, clip_ids: bool = False, pad_with_eos: bool = True
) -> tuple[Tokenizer, dict[str, int]]:
    """A word-level tokenizer with CLIP's special-token conventions.

    clip_ids puts the start/end tokens at CLIP's ids (49406/49407) so a text encoder of CLIP's vocabulary
    size sees the same ids it would with the real tokenizer.
    """
    vocab: dict[str, int] = {}
    for w in words:
        vocab.setdefault(w, len(vocab))
    vocab[UNK] = len(vocab)
    if clip_ids:
        vocab[BOS], vocab[EOS] = 49406, 49407
    else:
        vocab[BOS] = len(vocab)
        vocab[EOS] = len(vocab)
    # SD 2.x pads with "!" (CLIP id 0); mimic with the first word's id.
    pad_id = vocab[EOS] if pad_with_eos else 0
    pad_token = EOS if pad_with_eos else next(t for t, i in vocab.items() if i == 0)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    tok.add_special_tokens([UNK, BOS, EOS])
    tok.enable_truncation(MAX_LENGTH)
    tok.enable_padding(length=MAX_LENGTH, pad_id=pad_id, pad_token=pad_token)
    return tok, {"bos": vocab[BOS], "eos": vocab[EOS], "pad": pad_id, "unk": vocab[UNK]}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map (the base of the byte-level vocabulary)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def load_tokenizer(folder: Path) -> Tokenizer:
    """Read a diffusers `tokenizer/` folder: tokenizer.json, or CLIP's vocab.json + merges.txt."""
    if (folder / "tokenizer.json").exists():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        from transformers import CLIPTokenizerFast

        fast = CLIPTokenizerFast.from_pretrained(str(folder))
        tok = fast.backend_tokenizer
        pad_id = fast.pad_token_id if fast.pad_token_id is not None else fast.eos_token_id
        tok.enable_truncation(fast.model_max_length if fast.model_max_length < 10_000 else MAX_LENGTH)
        tok.enable_padding(length=MAX_LENGTH, pad_id=pad_id, pad_token=fast.pad_token or EOS)
        return tok
    raise SystemExit(f"{folder}: no tokenizer.json, and no vocab.json + merges.txt")


def describe(tok: Tokenizer) -> dict[str, Any]:
    """Manifest entry: what the engine needs to tokenize like the exporter did."""
    vocab = tok.get_vocab()
    padding = tok.padding or {}
    trunc = tok.truncation or {}
    enc = tok.encode("")
    return {
        "file": "tokenizer/tokenizer.json",
        "type": type(tok.model).__name__,
        "max_length": int(trunc.get("max_length", MAX_LENGTH)),
        "bos_token": BOS if BOS in vocab else None,
        "bos_token_id": vocab.get(BOS),
        "eos_token": EOS if EOS in vocab else None,
        "eos_token_id": vocab.get(EOS),
        "pad_token_id": int(padding.get("pad_id", vocab.get(EOS, 0))),
        "unk_token_id": vocab.get(UNK),
        "vocab_size": tok.get_vocab_size(),
        "empty_prompt_ids_head": enc.ids[:3],
    }
