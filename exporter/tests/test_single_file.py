"""Single-file checkpoints in the original SD layout (exporter/single_file.py): read offline, the same graphs as
the diffusers-folder export of the same weights, metadata honoured, bad files refused in one line."""

import json
import os

import pytest
import torch

from exporter.__main__ import main
from exporter.configs import build_random
from exporter.single_file import (CheckpointError, clip_tokenizer, detect_family, load_single_file, read_checkpoint,
                                  to_ldm_layout, write_checkpoint)


def _same_weights(a, b):
    for name in ("unet", "vae", "text_encoder"):
        x, y = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert set(x) == set(y), name
        for k in x:
            assert torch.equal(x[k], y[k]), f"{name}.{k}"


def test_tiny_round_trip_gives_byte_identical_graphs(tmp_path):
    ckpt = tmp_path / "tiny.safetensors"
    write_checkpoint(build_random("tiny", 0), ckpt)
    assert detect_family(read_checkpoint(ckpt)[0]) == "sd1"
    for args in (["random", "--config", "tiny"], ["export", "--from", str(ckpt)]):
        out = tmp_path / args[0]
        assert main([*args, "--out", str(out), "--skip-grad", "--quiet"]) == 0
    a, b = (json.loads((tmp_path / d / "nti.json").read_text())["files"] for d in ("random", "export"))
    assert set(a) == set(b)
    for f in a:
        assert a[f]["sha256"] == b[f]["sha256"], f"{f} differs between the folder and the single-file export"


def test_ckpt_files_and_metadata_clip_skip_prediction_type(tmp_path):
    c = build_random("tiny", 0)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": to_ldm_layout(c), "global_step": 1}, ckpt)
    _same_weights(c, load_single_file(ckpt))
    st = tmp_path / "finetune.safetensors"
    write_checkpoint(c, st, {"ss_clip_skip": 2, "modelspec.prediction_type": "v"})
    d = load_single_file(st)
    assert d.scheduler_config["prediction_type"] == "v_prediction"
    assert d.text_encoder.config.num_hidden_layers == c.text_encoder.config.num_hidden_layers - 1
    assert load_single_file(st, prediction_type="epsilon", clip_skip=1).scheduler_config["prediction_type"] == "epsilon"


def test_bad_checkpoints_are_refused_in_one_line(tmp_path):
    pickled = tmp_path / "code.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": os.getcwd}, pickled)  # a callable: refused unpickled
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_single_file(pickled)
    other = tmp_path / "other.safetensors"
    write_checkpoint(build_random("tiny", 0), other)
    state, _ = read_checkpoint(other)
    with pytest.raises(CheckpointError, match="no model.diffusion_model"):
        detect_family({k: v for k, v in state.items() if not k.startswith("model.")})
    with pytest.raises(CheckpointError, match="no text encoder weights"):
        detect_family({k: v for k, v in state.items() if not k.startswith("cond_stage_model.")})
    assert detect_family({**state, "cond_stage_model.model.token_embedding.weight": torch.zeros(2, 2)}) == "sd2"
    with pytest.raises(CheckpointError, match="ends in"):
        load_single_file(tmp_path / "model.bin")


def test_clip_tokenizer_from_the_shipped_merges():
    sd1, sd2 = clip_tokenizer(pad_with_eos=True), clip_tokenizer(pad_with_eos=False)
    assert sd1.get_vocab_size() == 49408
    # CLIP ViT-L/14's ids for "a photo of a cat": start, a, photo, of, a, cat, end; then SD 1.x pads with the
    # end token and SD 2.x with "!" (id 0)
    assert sd1.encode("a photo of a cat").ids[:8] == [49406, 320, 1125, 539, 320, 2368, 49407, 49407]
    assert sd2.encode("a photo of a cat").ids[:8] == [49406, 320, 1125, 539, 320, 2368, 49407, 0]


@pytest.mark.slow
def test_sd15_256_round_trip_weights_and_graphs(tmp_path):
    c = build_random("sd15-256", 0)
    ckpt = tmp_path / "sd15-256.safetensors"
    write_checkpoint(c, ckpt)
    _same_weights(c, load_single_file(ckpt))
    for args in (["random", "--config", "sd15-256"], ["export", "--from", str(ckpt)]):
        assert main([*args, "--out", str(tmp_path / args[0]), "--skip-grad", "--quiet"]) == 0
    a, b = (json.loads((tmp_path / d / "nti.json").read_text())["files"] for d in ("random", "export"))
    for f in a:
        if not f.startswith("tokenizer/"):  # the random config's word tokenizer against CLIP's real one
            assert a[f]["sha256"] == b[f]["sha256"], f
