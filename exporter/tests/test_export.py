"""Exported graphs against PyTorch on the tiny random model: forward graphs, gradient graph, control UNet."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from exporter import graphs, grad_graph, onnx_io
from exporter.attention import use_explicit_attention
from exporter.export import GRAPH_FILES
from exporter.reference import (EditSpec, P2PController, Reference, graph_control_inputs, refinement_mapper,
                                replacement_mapper)


def session(folder, key):
    return ort.InferenceSession(str(folder / GRAPH_FILES[key]), providers=["CPUExecutionProvider"])


def errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    abs_err = float(np.abs(got - want).max())
    return abs_err, abs_err / max(float(np.abs(want).max()), 1e-12)


def test_manifest_describes_every_file_and_graph(tiny_folder):
    manifest = json.loads((tiny_folder / "nti.json").read_text())
    assert manifest["format"] == "nti-model" and manifest["format_version"] == 2
    assert set(manifest["graphs"]) == set(GRAPH_FILES)
    # one copy of the UNet weights: its three graphs hold no tensor data of their own
    for key in ("unet", "unet_control", "null_text_grad"):
        assert manifest["graphs"][key]["external_data"] == "weights.bin", key
        assert manifest["files"][GRAPH_FILES[key]]["bytes"] < 2_000_000, key
    assert not any(f.endswith(".data") and f.startswith("unet/") for f in manifest["files"])
    for rel, entry in manifest["files"].items():
        assert onnx_io.sha256(tiny_folder / rel) == entry["sha256"], rel
    assert "tokenizer/tokenizer.json" in manifest["files"]
    assert manifest["prediction_type"] == "epsilon"
    assert manifest["latent_size"] * manifest["latent_factor"] == manifest["image_size"]
    assert manifest["scheduler"]["beta_schedule"] == "scaled_linear"
    assert manifest["tokenizer"]["max_length"] == 77
    assert manifest["attention"]["map_resolution"] >= 8
    assert manifest["text_hidden_size"] == 32


def test_declared_io_is_what_onnxruntime_sees(tiny_folder):
    manifest = json.loads((tiny_folder / "nti.json").read_text())
    for key, entry in manifest["graphs"].items():
        sess = session(tiny_folder, key)
        declared = [(i["name"], i["shape"]) for i in entry["inputs"]]
        actual = [(i.name, [d if isinstance(d, int) else d for d in i.shape]) for i in sess.get_inputs()]
        assert declared == actual, key
        assert [o["name"] for o in entry["outputs"]] == [o.name for o in sess.get_outputs()], key
    grad_io = manifest["graphs"]["null_text_grad"]
    assert [i["name"] for i in grad_io["inputs"]] == grad_graph.GRAD_INPUTS
    assert [o["name"] for o in grad_io["outputs"]] == grad_graph.GRAD_OUTPUTS


@pytest.mark.parametrize("key", ["text_encoder", "vae_encoder", "vae_decoder", "unet", "unet_control"])
def test_forward_graph_matches_pytorch(tiny_folder, tiny, key):
    specs = {s.name: s for s in graphs.graph_specs(tiny, tiny.image_size)}
    specs[GRAPH_FILES["unet_control"]] = graphs.control_spec(tiny.unet)
    spec = specs[GRAPH_FILES[key]]
    sess = session(tiny_folder, key)
    g = torch.Generator().manual_seed(123)
    worst = (0.0, 0.0)
    for trial in range(3):
        inputs = []
        for x in spec.inputs:
            if x.dtype == torch.int64 and x.dim() == 2:  # token ids
                inputs.append(torch.randint(0, 60, x.shape, generator=g))
            elif x.dtype == torch.int64:  # timestep
                inputs.append(torch.randint(0, 1000, x.shape, generator=g))
            elif spec.input_names[len(inputs)] in ("cross_flag", "self_flag"):
                inputs.append(torch.tensor([float(trial % 2)]))
            else:
                inputs.append(torch.randn(x.shape, generator=g) if x.dim() > 2 or key != "unet_control"
                              else torch.rand(x.shape, generator=g))
        with torch.no_grad():
            want = spec.module(*inputs)
        want = want if isinstance(want, tuple) else (want,)
        got = sess.run(None, {n: x.numpy() for n, x in zip(spec.input_names, inputs)})
        for g_out, w_out in zip(got, want):
            e = errors(g_out, w_out.numpy())
            worst = (max(worst[0], e[0]), max(worst[1], e[1]))
    print(f"{key}: max abs error {worst[0]:.2e}, max relative error {worst[1]:.2e}")
    assert worst[1] < 1e-4


def _grad_inputs(unet, seed):
    g = torch.Generator().manual_seed(seed)
    x = list(grad_graph.example_inputs(unet, seed=seed))
    x[1] = torch.randint(1, 1000, (1,), generator=g)
    x[5] = torch.tensor([7.5])
    t = int(x[1])
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    ac = torch.cumprod(1 - betas, 0)
    x[6] = ac[t].reshape(1)
    x[7] = ac[max(t - 20, 0)].reshape(1)
    # the target is a DDIM step away, as in null-text optimisation
    x[4] = x[0] * 1.01 + 0.1 * torch.randn(x[0].shape, generator=g)
    return tuple(x)


def _check_grad_graph(path, unet, prediction_type):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    use_explicit_attention(unet)
    eager = grad_graph.NullTextGrad(unet, prediction_type)
    worst = 0.0
    for seed in range(3):
        inputs = _grad_inputs(unet, seed)
        loss, grad, prev, uncond = sess.run(None, {n: x.numpy() for n, x in zip(grad_graph.GRAD_INPUTS, inputs)})
        w_loss, w_grad, w_prev, w_uncond = (t.detach().numpy() for t in eager(*inputs))
        g_abs, g_rel = errors(grad, w_grad)
        print(f"{prediction_type} seed {seed}: loss {loss[0]:.4e} (rel err {errors(loss, w_loss)[1]:.1e}); grad max abs "
              f"err {g_abs:.2e}, relative {g_rel:.2e}; latent_prev rel {errors(prev, w_prev)[1]:.1e}; "
              f"uncond rel {errors(uncond, w_uncond)[1]:.1e}")
        worst = max(worst, g_rel)
        assert errors(loss, w_loss)[1] < 1e-4
        assert errors(prev, w_prev)[1] < 1e-4 and errors(uncond, w_uncond)[1] < 1e-4
        # finite differences in float64 along a random direction
        d = torch.randn(inputs[2].shape, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
        d /= d.norm()
        unet64 = unet.double()
        try:
            x64 = [x.double() if x.is_floating_point() else x for x in inputs]
            h = 1e-4

            def loss_at(eps):
                x = list(x64)
                x[2] = x64[2] + eps * d
                with torch.no_grad():
                    return grad_graph.null_text_step(unet64, prediction_type, *x)[0].item()

            fd = (loss_at(h) - loss_at(-h)) / (2 * h)
        finally:
            unet.float()
        directional = float((torch.from_numpy(grad).double() * d).sum())
        print(f"  finite difference {fd:.6e} vs graph {directional:.6e}")
        assert abs(fd - directional) <= 1e-3 * max(abs(fd), 1e-8) + 1e-9
    assert worst <= 1e-3


def test_grad_graph_matches_autograd_and_finite_differences(tiny_folder, tiny):
    _check_grad_graph(tiny_folder / GRAPH_FILES["null_text_grad"], tiny.unet, "epsilon")


def test_grad_graph_v_prediction(tmp_path, tiny):
    path = tmp_path / "grad_v.onnx"
    grad_graph.export(tiny.unet, "v_prediction", path)
    _check_grad_graph(path, tiny.unet, "v_prediction")


def _control_feed(unet_inputs, ctl_inputs):
    sample, t, text = unet_inputs
    return {"sample": sample, "timestep": t, "encoder_hidden_states": text, **ctl_inputs}


def _controls(k, cross=0.0, self_=0.0, mapper=None):
    return {
        "mapper": mapper if mapper is not None else np.tile(np.eye(77, dtype=np.float32), (k - 1, 1, 1)),
        "alphas": np.ones((k - 1, 77), np.float32),
        "reweight": np.ones((k, 77), np.float32),
        "cross_flag": np.array([cross], np.float32),
        "self_flag": np.array([self_], np.float32),
    }


def test_control_unet_with_controls_off_is_the_plain_unet(tiny_folder):
    plain, control = session(tiny_folder, "unet"), session(tiny_folder, "unet_control")
    rng = np.random.default_rng(0)
    for k in (2, 3):
        sample = rng.standard_normal((2 * k, 4, 16, 16)).astype(np.float32)
        text = rng.standard_normal((2 * k, 77, 32)).astype(np.float32)
        t = np.array([321], np.int64)
        want = plain.run(None, {"sample": sample, "timestep": t, "encoder_hidden_states": text})[0]
        # random mapper, alphas and reweights: with both flags off none of them may matter
        ctl = _controls(k, mapper=rng.random((k - 1, 77, 77)).astype(np.float32))
        ctl["alphas"] = rng.random((k - 1, 77)).astype(np.float32)
        ctl["reweight"] = rng.random((k, 77)).astype(np.float32) * 3
        got, maps = control.run(None, _control_feed((sample, t, text), ctl))
        print(f"K={k}: control off vs plain max abs diff {np.abs(got - want).max():.2e}")
        assert np.abs(got - want).max() < 1e-5
        assert maps.shape == (k, 8, 8, 77)
        np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)  # softmax over tokens, averaged


def test_identity_injection_with_identical_prompts_changes_nothing(tiny_folder):
    control = session(tiny_folder, "unet_control")
    rng = np.random.default_rng(1)
    one = rng.standard_normal((1, 4, 16, 16)).astype(np.float32)
    sample = np.concatenate([one] * 4)
    null = rng.standard_normal((1, 77, 32)).astype(np.float32)
    cond = rng.standard_normal((1, 77, 32)).astype(np.float32)
    text = np.concatenate([null, null, cond, cond])
    t = np.array([500], np.int64)
    off, _ = control.run(None, _control_feed((sample, t, text), _controls(2)))
    on, maps = control.run(None, _control_feed((sample, t, text), _controls(2, cross=1.0, self_=1.0)))
    print(f"identity injection: max abs change {np.abs(on - off).max():.2e}")
    assert np.abs(on - off).max() < 1e-5
    assert np.abs(on[3] - on[2]).max() < 1e-5
    assert np.abs(maps[1] - maps[0]).max() < 1e-6


@pytest.mark.parametrize("mode,edited,reweight", [
    ("replace", "a blue circle on a white background", {}),
    ("refine", "a big red circle on a white background", {}),
    ("reweight", "a red circle on a white background", {"red": 3.0}),
    ("refine", "a big red circle on a white background", {"big": -1.0}),
])
def test_control_unet_matches_the_notebook_controller(tiny_folder, tiny, mode, edited, reweight):
    """One UNet call at a step with cross and self injection on: graph vs the reference's P2P controller."""
    source = "a red circle on a white background"
    ref = Reference(tiny)
    layout = ref.layout((1, 4, 16, 16))
    self_max = max(n for c, n in layout.values() if not c)
    map_res = json.loads((tiny_folder / "nti.json").read_text())["attention"]["map_resolution"]
    ctl = P2PController(ref.tokens, [source, edited], EditSpec(mode, reweight=reweight), 50, map_res ** 2, self_max)
    step = 5  # inside both injection windows
    ctl.cur_step = step
    rng = np.random.default_rng(2)
    z = torch.from_numpy(rng.standard_normal((1, 4, 16, 16)).astype(np.float32)).expand(2, 4, 16, 16)
    sample = torch.cat([z, z])
    null = ref.encode_prompts([""])
    text = torch.cat([null, null, ref.encode_prompts([source, edited])])
    t = torch.tensor([401])
    from exporter.reference import _ControlledProcessor

    ref.controller = ctl
    ref.unet.set_attn_processor({n: _ControlledProcessor(ref, n) for n in ref._plain_processors})
    with torch.no_grad():
        want = ref.unet(sample, t, text, return_dict=False)[0].numpy()
    want_maps = torch.stack(ctl.step_maps).mean(0).reshape(2, map_res, map_res, 77).numpy()
    inputs = graph_control_inputs(ctl, step)
    assert inputs["cross_flag"][0] == 1 and inputs["self_flag"][0] == 1
    got, maps = session(tiny_folder, "unet_control").run(
        None, _control_feed((sample.numpy(), t.numpy(), text.numpy()), inputs))
    plain = session(tiny_folder, "unet").run(None, {"sample": sample.numpy(), "timestep": t.numpy(),
                                                     "encoder_hidden_states": text.numpy()})[0]
    abs_err, rel_err = errors(got, want)
    print(f"{mode} {reweight}: graph vs notebook controller max abs {abs_err:.2e} rel {rel_err:.2e}; "
          f"edit branch moved by control {np.abs(want[3] - plain[3]).max():.2e}")
    assert rel_err < 1e-4
    assert np.abs(maps - want_maps).max() < 1e-5
    assert np.abs(want[3] - plain[3]).max() > 1e-3  # the control really acted


def test_replacement_and_refinement_mappers(tiny):
    ref = Reference(tiny)
    m = replacement_mapper(ref.tokens, "a red circle", "a blue circle")
    assert torch.equal(m, torch.eye(77))  # word-level: a swap maps each token to its place
    mapper, alphas = refinement_mapper(ref.tokens, "a red circle", "a big red circle")
    # edited tokens: <s> a big red circle </s>; "big" is new
    assert mapper[:6].tolist() == [0, 1, -1, 2, 3, 4]
    assert alphas[:6].tolist() == [1, 1, 0, 1, 1, 1]
    assert mapper[6:].tolist() == list(range(6, 77))


def _matmul_graph(weight: np.ndarray, bias: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_shared_weights_file_keeps_each_tensor_once_and_reads_external_data_tensor_by_tensor(tmp_path):
    """Graphs written with their own external data (as SD-size graphs are) end up over one aligned file."""
    import onnx

    rng = np.random.default_rng(0)
    shared = rng.standard_normal((64, 64)).astype(np.float32)  # 16 KB, in both graphs
    biases = [rng.standard_normal(64).astype(np.float32) for _ in range(2)]  # 256 B: stays in its graph
    x = rng.standard_normal((1, 64)).astype(np.float32)
    for i, name in enumerate(("a.onnx", "b.onnx")):
        onnx.save_model(_matmul_graph(shared, biases[i]), str(tmp_path / name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=name + ".data", size_threshold=0)
    counts = onnx_io.share_external_data(tmp_path, ["a.onnx", "b.onnx"], "weights.bin")
    assert counts == {"held": 2 * shared.nbytes, "written": shared.nbytes}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx", "weights.bin"]
    for i, name in enumerate(("a.onnx", "b.onnx")):
        (y,) = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        np.testing.assert_allclose(y, x @ shared + biases[i], rtol=1e-5, atol=1e-5)
