"""Recovering shapes-tiny's diffusers weights from its shipped ONNX graphs."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from exporter import graphs
from exporter.export import load_diffusers
from exporter.recover import recover

ROOT = Path(__file__).resolve().parents[2]


def test_recovered_modules_compute_what_the_shipped_graphs_compute(tmp_path):
    counts = recover(ROOT / "models/shapes-tiny", tmp_path / "recovered")
    assert counts["unet"] > 1_000_000
    c = load_diffusers(str(tmp_path / "recovered"))
    for spec in graphs.graph_specs(c, c.image_size):
        session = ort.InferenceSession(str(ROOT / "models/shapes-tiny" / spec.name))
        got = session.run(None, {n: v.numpy() for n, v in zip(spec.input_names, spec.inputs)})[0]
        with torch.no_grad():
            want = spec.module(*spec.inputs)
        want = (want[0] if isinstance(want, tuple) else want).numpy()
        err = float(np.abs(got - want).max() / np.abs(want).max())
        print(spec.name, err)
        assert err < 1e-5, spec.name
