"""Word-level CLIP-like tokenizer of shapes-tiny."""

import json

import numpy as np
from tokenizers import Tokenizer

from exporter.shapes import scenes as S
from exporter.shapes import tokenizer as T


def test_special_ids_and_vocab():
    v = T.vocab()
    assert len(v) == T.VOCAB_SIZE == len(S.VOCAB) + 3
    assert v[T.BOS] == T.BOS_ID and v[T.EOS] == T.EOS_ID and v[T.UNK] == T.UNK_ID
    assert T.PAD_ID == T.EOS_ID  # SD 1.x pads with the end token
    assert T.EOS_ID == T.VOCAB_SIZE - 1  # highest id, like CLIP
    assert sorted(v.values()) == list(range(T.VOCAB_SIZE))
    assert T.SPECIAL_IDS == {"bos": T.BOS_ID, "eos": T.EOS_ID, "pad": T.PAD_ID, "unk": T.UNK_ID}


def test_encode_and_pad():
    p = "a red circle and a blue square on a white background"
    ids = T.encode_batch([p, ""])
    assert ids.shape == (2, 77) and ids.dtype == np.int64
    words = p.split()
    assert ids[0, 0] == T.BOS_ID
    assert list(ids[0, 1:1 + len(words)]) == [T.vocab()[w] for w in words]
    assert (ids[0, 1 + len(words):] == T.EOS_ID).all()
    assert list(ids[1, :3]) == [T.BOS_ID, T.EOS_ID, T.EOS_ID] and (ids[1, 1:] == T.EOS_ID).all()
    assert T.decode(ids[0]) == p


def test_normalisation_unknown_and_truncation():
    ids = T.encode_batch(["A  RED Circle", "a red dog", " ".join(["red"] * 100)])
    v = T.vocab()
    assert list(ids[0, :5]) == [T.BOS_ID, v["a"], v["red"], v["circle"], T.EOS_ID]
    assert ids[1, 3] == T.UNK_ID
    assert ids[2, 0] == T.BOS_ID and ids[2, -1] == T.EOS_ID and (ids[2, 1:-1] == v["red"]).all()


def test_all_prompts_in_vocab():
    for sc in S.split_scenes("train", 50, seed=0):
        assert T.UNK_ID not in T.encode_batch([S.prompt_for(sc)])[0]


def test_save_load(tmp_path):
    f = T.save(tmp_path / "tokenizer")
    assert f.name == "tokenizer.json"
    tok = Tokenizer.from_file(str(f))
    prompts = ["a green triangle on a black background", ""]
    assert [e.ids for e in tok.encode_batch(prompts)] == T.encode_batch(prompts).tolist()
    j = json.loads(f.read_text())
    assert j["model"]["type"] == "WordLevel"
    assert j["padding"]["strategy"] == {"Fixed": 77} and j["padding"]["pad_id"] == T.EOS_ID
    assert j["truncation"]["max_length"] == 77

    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "tokenizer"))
    assert hf.model_max_length == 77 and hf.pad_token_id == T.EOS_ID and hf.bos_token_id == T.BOS_ID
    enc = hf(prompts, padding="max_length", max_length=hf.model_max_length, truncation=True)
    assert enc["input_ids"] == T.encode_batch(prompts).tolist()
