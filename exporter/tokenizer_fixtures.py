"""Reference ids for the TypeScript tokenizer (`src/core/tokenizer.ts`), written by Python.

`.venv/bin/python -m exporter.tokenizer_fixtures` writes `test/fixtures/tokenizer/expected.json` with, for
each prompt of PROMPTS, the padded ids, the unpadded tokens and the plain sequence of:

- the two word-level tokenizers the project ships (`tokenizers.Tokenizer.from_file` on their tokenizer.json);
- a small CLIP BPE tokenizer in the vocab.json + merges.txt layout of SD 1.x folders, built here
  deterministically into `test/fixtures/tokenizer/clip-bpe/` and encoded by `transformers.CLIPTokenizer`.

plus `exporter.reference.Tokens` word/token bookkeeping for a few prompts. transformers 5 no longer has the
slow (pure-Python) CLIPTokenizer, so ClipSlow below re-implements it (transformers 4.x `tokenization_clip.py`
without ftfy; checked once against transformers 4.46.3: same ids for every prompt) as a second, independent
reference. Where it and the tokenizers-backed one disagree (known cases only, KNOWN_SLOW_FAST_DIFFERENCES)
the engine follows the latter, as the exporter does.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from itertools import pairwise
from pathlib import Path

import regex

from .tokenizer import bytes_to_unicode, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "test" / "fixtures" / "tokenizer"
CLIP_DIR = OUT / "clip-bpe"
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

WORD_LEVEL_TOKENIZERS = {
    "tiny": ROOT / "test" / "fixtures" / "tiny" / "model" / "tokenizer",
    "shapes-tiny": ROOT / "models" / "shapes-tiny" / "tokenizer",
}

LONG_PROMPT = " ".join(["a red circle and a blue square on a white background"] * 8)
PROMPTS = [
    "a photo of a cat",
    "a red circle on a white background",
    "A Red CIRCLE and a Blue Square",
    "A PHOTO OF A CAT",
    "a cat, a dog; and a horse!",
    "  a   red circle  on  a white   background  ",
    "a red\tcircle\non a white background",
    "a fluffy cat sitting on a wooden chair",
    "a zebra in the savanna with a zebra foal",
    "",
    "   ",
    "café crème brûlée",
    "cafe\u0301 au lait",  # decomposed é: NFC makes it the same as "café"
    "a cat 🐱 and a dog 🐶",
    "family 👨\u200d👩\u200d👧 portrait",
    "東京の夜景",
    "ΟΔΟΣ street",
    "İstanbul Straße",
    "it's a dog's life, isn't it? they'll say we're fine",
    "3 red circles and 12 blue squares",
    "a cat_dog-hybrid",
    "red-green-blue!!! ... ???",
    "a <|startoftext|> circle <|endoftext|> square",
    "a painting of a mountain lake at sunset, trending on artstation, 4k, highly detailed",
    "bell\u0007 ring",
    " ".join(["red"] * 75),
    " ".join(["red"] * 76),
    LONG_PROMPT,
]

# (prompt, word index) pairs for Tokens.word_token_indices, and (prompt, word) for Tokens.word_indices.
WORD_TOKEN_QUERIES = [
    ("a red circle on a white background", i) for i in range(7)
] + [
    ("a fluffy cat,  sitting on a mountain", i) for i in range(7)
] + [
    ("it's a dog's life", 2),
    (LONG_PROMPT, 75),
]
WORD_QUERIES = [
    ("a red circle and a blue circle", "circle"),
    ("a red circle and a blue circle", "a"),
    ("a red circle and a blue circle", "zebra"),
    ("a fluffy cat, a cat", "cat"),
]

# Sentences the small CLIP vocabulary is trained on: the words of the prompts above and of the tests.
CLIP_TRAINING_TEXT = """
a photo of a cat. a photo of a dog. a red circle on a white background. a blue square and a green triangle.
a painting of a mountain lake at sunset, highly detailed. a fluffy cat sitting on a wooden chair.
a horse in a field of flowers. a bird on a tree. the city street at night. a beach with a blue sea.
it's a dog's life, they're fine, we'll see, i'm here, you've seen, he'd go. isn't it? don't!
red green blue yellow orange purple white black gray brown pink big small old new snow forest river.
family portrait, trending on artstation, 4k, 8k, sharp focus, cinematic lighting, digital art.
circle circle circle square square triangle triangle background background painting painting photo photo
"""
CLIP_MERGES = 400


BYTE_ENCODER = bytes_to_unicode()
CLIP_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def merge_pair(word: list[str], pair: tuple[str, str]) -> list[str]:
    """`word` with every left-to-right occurrence of `pair` joined into one symbol."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_clip_bpe(text: str, n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Tiny deterministic BPE trainer laid out like CLIP's vocabulary.

    Vocabulary order is CLIP's: the 256 byte characters, the same with `</w>`, one token per merge, then
    the start and end tokens. Merges take the most frequent pair, ties broken by the pair itself, until
    n_merges or until every word is a single token.
    """
    text = regex.sub(r"\s+", " ", text).strip().lower()
    words = Counter(
        tuple("".join(BYTE_ENCODER[b] for b in w.encode("utf-8")))
        for w in CLIP_PATTERN.findall(text)
    )
    corpus = {w[:-1] + (w[-1] + "</w>",): n for w, n in words.items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in corpus.items():
            for pair in pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, n in corpus.items():
            merged[tuple(merge_pair(list(word), best))] += n
        corpus = merged
    base = list(BYTE_ENCODER.values())
    tokens = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab, merges


def added_token(content: str) -> dict:
    """A special token as transformers writes it into tokenizer_config.json."""
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def write_clip_folder(folder: Path) -> None:
    """vocab.json + merges.txt + the two config files an SD 1.x `tokenizer/` folder carries."""
    vocab, merges = train_clip_bpe(CLIP_TRAINING_TEXT, CLIP_MERGES)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": added_token(BOS), "do_lower_case": True, "eos_token": added_token(EOS),
        "errors": "replace", "model_max_length": MAX_LENGTH, "pad_token": EOS,
        "tokenizer_class": "CLIPTokenizer", "unk_token": added_token(EOS),
    }, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS,
    }, indent=2) + "\n")


class ClipSlow:
    """transformers 4.x `CLIPTokenizer` (the slow one) without ftfy, reduced to what encoding needs."""

    def __init__(self, folder: Path):
        self.encoder: dict[str, int] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").strip().split("\n")[1: 49152 - 256 - 2 + 1]
        self.ranks = {tuple(line.split()): i for i, line in enumerate(lines)}

    def bpe(self, token: str) -> list[str]:
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = set(pairwise(word))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            word = merge_pair(word, best)
        return word

    @staticmethod
    def basic_clean(text: str) -> str:
        """BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize, joined by spaces."""
        kept = []
        for ch in text:
            cat = unicodedata.category(ch)
            if ord(ch) in (0, 0xFFFD) or (ch not in "\t\n\r" and cat.startswith("C")):
                continue
            if ch in " \t\n\r" or cat == "Zs":
                kept.append(" ")
            elif _is_cjk(ord(ch)):
                kept.append(f" {ch} ")
            else:
                kept.append(ch)
        text = unicodedata.normalize("NFC", "".join(kept))
        return " ".join(t.lower() for t in text.split())

    def encode(self, prompt: str) -> list[int]:
        ids: list[int] = []
        # The base class first cuts the text at the special tokens, which map straight to their ids.
        for i, chunk in enumerate(regex.split(r"(<\|startoftext\|>|<\|endoftext\|>)", prompt)):
            if i % 2:
                ids.append(self.encoder[chunk])
                continue
            for token in CLIP_PATTERN.findall(self.basic_clean(chunk)):
                for piece in self.bpe("".join(BYTE_ENCODER[b] for b in token.encode("utf-8"))):
                    ids.append(self.encoder.get(piece, self.encoder[EOS]))
        ids = [self.encoder[BOS]] + ids[: MAX_LENGTH - 2] + [self.encoder[EOS]]
        return ids + [self.encoder[EOS]] * (MAX_LENGTH - len(ids))


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


# Where the slow tokenizer is known to differ from the tokenizers-backed one (and so from the engine):
# it puts spaces around CJK characters, drops control and format characters (the emoji joiner too),
# and Python's str.lower() gives a final sigma where Rust's per-character lowercase does not.
KNOWN_SLOW_FAST_DIFFERENCES = {
    "東京の夜景", "ΟΔΟΣ street", "bell\u0007 ring", "family 👨\u200d👩\u200d👧 portrait",
}


def tokenizer_record(tok, tokens_helper) -> dict:
    """Padded ids, unpadded tokens and the plain sequence of every prompt, plus word bookkeeping."""
    cases = []
    for prompt in PROMPTS:
        enc = tok.encode(prompt)
        n = sum(enc.attention_mask)
        cases.append({
            "prompt": prompt,
            "ids": enc.ids,
            "tokens": enc.tokens[:n],
            "sequence": tokens_helper.sequence(prompt),
            "untruncated_length": len(tokens_helper.plain.encode(prompt).ids),
        })
    return {
        "cases": cases,
        "word_token_indices": [
            {"prompt": p, "word_index": i, "indices": tokens_helper.word_token_indices(p, i)}
            for p, i in WORD_TOKEN_QUERIES
        ],
        "word_indices": [
            {"prompt": p, "word": w, "indices": tokens_helper.word_indices(p, w)} for p, w in WORD_QUERIES
        ],
    }


def compact_json(value, indent: str = "") -> str:
    """Indented JSON with lists of numbers or strings kept on one line, so the fixture stays readable."""
    inner = indent + " "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {compact_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}" if items else "{}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + compact_json(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def main() -> None:
    from tokenizers import Tokenizer
    from transformers import CLIPTokenizer

    from .reference import Tokens

    write_clip_folder(CLIP_DIR)
    expected: dict = {"max_length": MAX_LENGTH, "tokenizers": {}}
    for name, folder in WORD_LEVEL_TOKENIZERS.items():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        record = tokenizer_record(tok, Tokens(tok))
        record["folder"] = str(folder.relative_to(ROOT))
        expected["tokenizers"][name] = record

    # The project's own loader (CLIPTokenizerFast's backend, padded and truncated) drives Tokens; the ids
    # must equal those of transformers.CLIPTokenizer built straight from the two files.
    backend = load_tokenizer(CLIP_DIR)
    record = tokenizer_record(backend, Tokens(backend))
    record["folder"] = str(CLIP_DIR.relative_to(ROOT))
    # transformers 5 takes the paths as vocab=/merges=; vocab_file=/merges_file= are silently ignored.
    clip = CLIPTokenizer(vocab=str(CLIP_DIR / "vocab.json"), merges=str(CLIP_DIR / "merges.txt"))
    assert len(clip.get_vocab()) == len(json.loads((CLIP_DIR / "vocab.json").read_text(encoding="utf-8")))
    slow = ClipSlow(CLIP_DIR)
    differing = set()
    for case in record["cases"]:
        ids = clip(case["prompt"], padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
        assert ids == case["ids"], f"CLIPTokenizer and load_tokenizer differ on {case['prompt']!r}"
        if slow.encode(case["prompt"]) != ids:
            differing.add(case["prompt"])
    assert differing == KNOWN_SLOW_FAST_DIFFERENCES, f"slow/fast CLIP differ on {sorted(differing)}"
    record["slow_tokenizer_differs_on"] = sorted(differing)
    expected["tokenizers"]["clip-bpe"] = record

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "expected.json").write_text(compact_json(expected) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in CLIP_DIR.iterdir())
    print(f"wrote {OUT / 'expected.json'} ({len(PROMPTS)} prompts x {len(expected['tokenizers'])} tokenizers); "
          f"clip-bpe folder {size / 1024:.1f} KB")


if __name__ == "__main__":
    main()
