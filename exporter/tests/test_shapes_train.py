"""Smoke test of the shapes-tiny training script: a handful of steps of each stage, folder loads back."""

import csv
import json

import numpy as np
import pytest
import torch
from transformers import CLIPTextModel

from exporter.shapes import models as M
from exporter.shapes import sample as SP
from exporter.shapes import scenes as S
from exporter.shapes import tokenizer as T
from exporter.shapes import train

TINY = ["--threads", "1", "--vae-steps", "3", "--vae-batch", "4", "--vae-warmup", "1", "--vae-eval", "4",
        "--unet-steps", "4", "--batch", "8", "--warmup", "1", "--pool", "32", "--ckpt-every", "2",
        "--log-every", "1", "--eval-prompts", "2", "--eval-steps", "2", "--ground-steps", "0"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread: these models are tiny, and two threads on a busy 2-core machine stall badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("shapes") / "model"
    train.main(["--out", str(out), *TINY])
    return out


def test_folder_layout_and_configs(trained):
    out = trained
    for f in ["unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
              "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
              "text_encoder/model.safetensors", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json",
              "model_index.json", "train_info.json", "losses.csv", "losses.png", "eval.csv"]:
        assert (out / f).is_file(), f
    sch = json.loads((out / "scheduler/scheduler_config.json").read_text())
    assert sch["_class_name"] == "DDIMScheduler"
    for k, v in dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                     clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon").items():
        assert sch[k] == v, k
    idx = json.loads((out / "model_index.json").read_text())
    assert idx["unet"] == ["diffusers", "UNet2DConditionModel"] and idx["vae"] == ["diffusers", "AutoencoderKL"]
    info = json.loads((out / "train_info.json").read_text())
    assert info["vae"]["steps"] == 3 and info["unet"]["steps"] == 4 and info["seed"] == 0
    assert info["params"]["unet"] > 1_000_000 and info["torch"] == torch.__version__
    assert "accuracy" in info["eval"]
    rows = (out / "losses.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 + 4


def test_loads_with_from_pretrained(trained):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(trained / "unet")
    vae = AutoencoderKL.from_pretrained(trained / "vae")
    te = CLIPTextModel.from_pretrained(trained / "text_encoder")
    DDIMScheduler.from_pretrained(trained / "scheduler")
    assert unet.config.sample_size == 16 and unet.config.cross_attention_dim == te.config.hidden_size == 128
    assert te.config.vocab_size == T.VOCAB_SIZE and te.config.eos_token_id == T.EOS_ID
    assert te.config.max_position_embeddings == 77
    sf = vae.config.scaling_factor
    assert sf != 1.0 and sf > 0
    info = json.loads((trained / "train_info.json").read_text())
    assert sf == pytest.approx(info["scaling_factor"])
    # the UNet runs on the VAE's latent grid with the text encoder's states
    ids = torch.from_numpy(T.encode_batch(["a red circle on a white background"]))
    with torch.no_grad():
        ctx = te(ids)[0]
        z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
        eps = unet(z * sf, 10, encoder_hidden_states=ctx).sample
    assert z.shape == (1, 4, 16, 16) and eps.shape == z.shape


def test_sampler(trained):
    m = SP.load(trained)
    ims = SP.generate(m, ["a red circle on a white background", ""], steps=2, guidance=7.5, seed=1)
    assert ims.shape == (2, 64, 64, 3) and ims.dtype == np.uint8
    again = SP.generate(m, ["a red circle on a white background"], steps=2, guidance=7.5, seed=1, batch_size=1)
    assert np.array_equal(ims[:1], again)


def test_diffusers_pipeline_loads(trained):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(trained), safety_checker=None, feature_extractor=None)
    img = pipe("a blue square on a gray background", num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 64, 64, 3)


def test_resume_is_exact(tmp_path, trained):
    """Stopping after 2 UNet steps and resuming gives the same weights as the unbroken run."""
    out = tmp_path / "resumed"
    args = ["--out", str(out), *TINY, "--eval-prompts", "0"]
    train.main(args + ["--until", "2"])
    assert not (out / "unet").exists()
    train.main(args)
    a = torch.load(out / "checkpoints/unet.pt", weights_only=False)
    b = torch.load(trained / "checkpoints/unet.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for k in a["unet"]:
        assert torch.equal(a["unet"][k], b["unet"][k]), k
    for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"]):
        assert torch.equal(x, y)


def test_rejects_other_settings(trained):
    with pytest.raises(SystemExit):
        train.main(["--out", str(trained), *TINY, "--lr", "1e-3"])


def test_configs_match_brief():
    unet, vae, te = M.build_unet(), M.build_vae(), M.build_text_encoder()
    assert 1_500_000 <= M.n_params(unet) <= 2_000_000
    assert M.n_params(vae) < 1_000_000
    assert te.config.hidden_size == 128 and te.config.num_hidden_layers == 2 and te.config.num_attention_heads == 4
    assert unet.config.down_block_types[0] == "DownBlock2D" and unet.config.up_block_types[-1] == "UpBlock2D"
    assert len(vae.config.block_out_channels) == 3  # 64 -> 16


def test_sd_layout_attends_at_the_finest_level():
    unet = M.build_unet("sd")
    assert unet.config.down_block_types[0] == "CrossAttnDownBlock2D"
    assert unet.config.up_block_types[-1] == "CrossAttnUpBlock2D"
    assert unet.config.down_block_types[-1] == "DownBlock2D"  # as SD 1.x: none at the coarsest level
    assert 1_500_000 <= M.n_params(unet) <= 2_000_000


def test_transplant_keeps_the_function_where_the_layouts_agree():
    torch.manual_seed(0)
    src = M.build_unet("v1").eval()
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([500, 500]), torch.randn(2, 77, 128)
    same = M.build_unet("v1").eval()
    counts = train.transplant_unet(src, same)
    assert counts["new"] == 0 and counts["dropped"] == 0
    with torch.no_grad():
        assert torch.equal(src(x, t, encoder_hidden_states=ctx).sample, same(x, t, encoder_hidden_states=ctx).sample)
    other = M.build_unet("sd").eval()
    counts = train.transplant_unet(src, other)
    assert counts["new"] > 0 and counts["dropped"] > 0
    # the attention the v1 UNet lacked (at 16x16) starts as the identity; what both have is copied
    assert torch.count_nonzero(other.down_blocks[0].attentions[0].proj_out.weight) == 0
    assert torch.equal(other.down_blocks[1].attentions[0].proj_out.weight, src.down_blocks[1].attentions[0].proj_out.weight)
    assert torch.equal(other.down_blocks[0].resnets[0].conv1.weight, src.down_blocks[0].resnets[0].conv1.weight)


def test_warm_start_runs_the_unet_stage_from_a_trained_folder(trained, tmp_path):
    out = tmp_path / "warm"
    train.main(["--out", str(out), *TINY, "--warm-start", str(trained), "--unet-layout", "sd", "--eval-prompts", "0"])
    info = json.loads((out / "train_info.json").read_text())
    assert info["unet"]["steps"] == 4 and info["vae"]["init_from"] == str(trained)
    assert json.loads((out / "unet" / "config.json").read_text())["down_block_types"][0] == "CrossAttnDownBlock2D"
    with pytest.raises(SystemExit, match="give one of them"):
        train.main(["--out", str(tmp_path / "both"), *TINY, "--warm-start", str(trained), "--init-from", str(trained)])


def test_edit_diagnostics_on_a_trained_model(trained, tmp_path):
    from exporter.shapes import edit_diagnostics as D

    md, js = tmp_path / "D.md", tmp_path / "d.json"
    D.main(["--model", str(trained), "--out", str(md), "--json", str(js), "--scenes", "1", "--steps", "4"])
    s = json.loads(js.read_text())
    row = s["rows"][0]
    for name in D.VARIANTS:
        assert name in md.read_text()
        assert np.isfinite(row[name]["background_psnr"]) and 0 < row[name]["mask_coverage"] <= 1
    assert row["no_blend"]["mask_coverage"] == 1.0
    assert row["true_mask"]["mask_coverage"] < 1.0  # one object never fills the latent
    first = md.read_text()
    md.unlink()
    D.main(["--model", str(trained), "--out", str(md), "--json", str(js), "--render-only"])
    assert md.read_text() == first  # the markdown is a function of the JSON alone
    split = row["attention"]["object"]
    assert abs(split["start"] + split["words"] + split["end_and_padding"] - 1) < 1e-4  # softmax rows sum to 1


def test_attention_split_and_latent_mask():
    from exporter.shapes import edit_diagnostics as D

    maps = np.zeros((2, 2, 77), np.float32)
    maps[0, 0, 1] = 1.0  # the object cell looks at the first word
    maps[0, 1:, 0] = maps[1, :, 0] = 1.0  # the others at the start token
    objects = np.zeros((8, 8), bool)
    objects[:4, :4] = True
    split = D._attention_split(maps, n_words=3, objects=objects)
    assert split["object"] == {"start": 0.0, "words": 1.0, "end_and_padding": 0.0}
    assert split["background"]["start"] == 1.0
    m = np.zeros((8, 8), bool)
    m[0, 0] = True
    assert D._latent_mask(m, 2).tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_tail_tie_replaces_the_tail_and_measures_its_distance():
    ids = torch.from_numpy(T.encode_batch(["a red circle on a white background", ""]))
    tail = train.tail_mask(ids)
    assert tail[0].int().argmax().item() == 8  # [start, 7 words, end ...]: the end token is position 8
    assert tail[1].int().argmax().item() == 1 and tail[1, 1:].all() and not tail[:, 0].any()
    torch.manual_seed(0)
    ctx, empty = torch.randn(2, 77, 5), torch.randn(1, 77, 5)
    ctx[1] = empty[0]  # a dropped prompt is the empty prompt
    seen, tie = train.tie_tail(ctx, empty, ids)
    assert torch.equal(seen[0, :8], ctx[0, :8]) and torch.equal(seen[:, 8:], empty.expand(2, -1, -1)[:, 8:])
    expected = ((ctx[0, 8:] - empty[0, 8:]) ** 2).sum() / ((69 + 76) * 5)  # the empty row adds nothing but count
    assert torch.allclose(tie, expected)


def test_tail_tie_training_pulls_the_tail_onto_the_empty_prompts(tmp_path):
    """With --tail-tie the saved text encoder's tail moves towards the empty prompt's, and the loss is logged."""
    out = tmp_path / "tied"
    train.main(["--out", str(out), *TINY, "--eval-prompts", "0", "--tail-tie", "1", "--lr", "1e-2",
                "--unet-steps", "30", "--ema", "0"])
    ids = torch.from_numpy(T.encode_batch(["a red circle on a white background", ""]))

    def tail_gap(model):
        with torch.no_grad():
            h = model(ids)[0]
        return float((h[0, 8:] - h[1, 8:]).norm() / h[1, 8:].norm())

    torch.manual_seed(1)  # train_unet seeds with seed + 1, then builds the UNet and the text encoder
    M.build_unet()
    before = tail_gap(M.build_text_encoder())
    after = tail_gap(CLIPTextModel.from_pretrained(out / "text_encoder"))
    assert after < 0.5 * before, (before, after)
    with (out / "losses.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["stage"] == "unet"]
    assert len(rows) == 30 and all(float(r["tail_tie"]) >= 0 for r in rows)


def test_word_regions_and_one_word_swaps():
    from exporter.shapes import grounding as G

    p = "a red circle and a blue square on a white background"
    r = G.word_regions(p)
    # [start, a, red, circle, and, a, blue, square, on, a, white, background, end ...]
    assert r[:13].tolist() == [-1, -1, 0, 0, -1, -1, 1, 1, -1, -1, 2, 2, -1] and (r[13:] == -1).all()
    rng = np.random.default_rng(0)
    for _ in range(50):
        q, changed = G.swap_one_word(p, rng)
        diff = [i + 1 for i, (a, b) in enumerate(zip(p.split(), q.split())) if a != b]
        assert len(diff) == 1 and diff[0] == changed[0]
        word = p.split()[diff[0] - 1]
        # a colour may change its noun too; a shape only itself
        assert changed == ([diff[0], diff[0] + 1] if word in ("red", "blue", "white") else diff)
        assert " ".join(q.split()[:-4]).count(" and ") == 1  # the grammar holds
    ids, swapped, keep = G.phrase_tie_batch([p, ""], rng)
    assert keep[1].all() and torch.equal(ids[1], swapped[1])  # an empty prompt is its own pair
    assert (~keep[0]).sum() in (1, 2) and keep[0, 0] and keep[0, 12:].all()  # start, end and padding kept


def test_phrase_tie_and_grounding_losses():
    from exporter.shapes import grounding as G

    ctx = torch.randn(2, 77, 8)
    keep = torch.ones(2, 77, dtype=torch.bool)
    other = ctx.clone()
    other[0, 3] += 5.0
    assert G.phrase_tie_loss(ctx, ctx, keep) == 0
    assert G.phrase_tie_loss(ctx, other, keep) > 0
    keep[0, 3] = False
    assert G.phrase_tie_loss(ctx, other, keep) == 0  # a position allowed to change costs nothing
    scene = S.Scene((S.Obj("square", "red", (16.0, 16.0), 20.0),), "white")
    regions = torch.from_numpy(G.regions(scene, 16))[None]  # [1, 3, 16, 16]
    assert torch.allclose(regions.sum(1), torch.ones(1, 16, 16))
    token_region = torch.from_numpy(G.word_regions(S.prompt_for(scene)))[None]
    inside = torch.zeros(1, 64, 77)  # an 8x8 layer whose "red" and "square" attend only inside the square
    obj8 = torch.nn.functional.adaptive_avg_pool2d(regions, 8)[0, 0].flatten()
    inside[0, :, 2] = inside[0, :, 3] = (obj8 >= 0.999).float()
    bg8 = torch.nn.functional.adaptive_avg_pool2d(regions, 8)[0, 2].flatten()
    inside[0, :, 6] = inside[0, :, 7] = (bg8 >= 0.999).float()
    assert G.grounding_loss([inside], regions, token_region) < 1e-6
    flat = torch.full((1, 64, 77), 1 / 77)
    assert G.grounding_loss([flat], regions, token_region) > 0.1


def test_grounding_stage_fine_tunes_an_init_folder(trained, tmp_path):
    """--init-from skips the vae and unet stages; the grounding stage logs its losses and saves a folder."""
    out = tmp_path / "grounded"
    train.main(["--out", str(out), "--threads", "1", "--init-from", str(trained), "--pool", "32", "--batch", "8",
                "--ground-steps", "3", "--ground-warmup", "1", "--ckpt-every", "2", "--log-every", "1",
                "--eval-prompts", "0"])
    with (out / "losses.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["stage"] == "ground"]
    assert len(rows) == 3 and all(float(r["phrase_tie"]) >= 0 and 0 <= float(r["grounding"]) <= 1 for r in rows)
    info = json.loads((out / "train_info.json").read_text())
    assert info["ground"]["steps"] == 3 and info["vae"]["init_from"] == str(trained)
    assert json.loads((out / "vae/config.json").read_text())["scaling_factor"] == \
        json.loads((trained / "vae/config.json").read_text())["scaling_factor"]
    m = SP.load(out)
    assert not any(type(p).__name__ == "ExplicitAttnProcessor" for p in m.unet.attn_processors.values())
