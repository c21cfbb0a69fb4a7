"""The ground-truth edit benchmark's Python side: the scene set and the scoring."""

import json

import numpy as np
from PIL import Image

from exporter.shapes import bench


def test_make_and_score_perfect_results(tmp_path):
    data = bench.make(tmp_path / "set", 3, seed=0)
    assert len(data["scenes"]) == 3
    for item in data["scenes"]:
        assert [e["type"] for e in item["edits"]] == list(bench.EDIT_TYPES)
        for e in item["edits"]:
            mask = np.asarray(Image.open(tmp_path / "set" / e["mask"]))
            assert 0 < (mask > 127).mean() < 1, "a change mask is partial"
            assert e["prompt"] != item["prompt"]
    # the truth itself as the engine's output: every edit right, reconstruction perfect
    scenes = [{"id": it["id"], "methods": {"nulltext": {
        "label": "Null-text", "reconstruction": str(tmp_path / "set" / it["source"]), "seconds": 1.0, "unetForward": 10, "unetBackward": 5,
        "edits": [{"type": e["type"], "image": str(tmp_path / "set" / e["truth"]), "seconds": 0.5} for e in it["edits"]],
    }}} for it in data["scenes"]]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"model": "m", "settings": {}, "scenes": scenes}))
    scored = bench.score(tmp_path / "set", results)
    s = scored["summary"]["nulltext"]
    assert s["ssim"] == 1.0 and s["psnr"] == float("inf")
    for k in bench.EDIT_TYPES:
        assert s[k]["accuracy"] == 1.0, k
    assert "| Null-text |" in bench.markdown(scored)


def test_ssim_drops_with_noise():
    rng = np.random.default_rng(0)
    a = np.repeat(np.linspace(0, 255, 32)[None, :, None], 32, 0).repeat(3, 2).astype(np.uint8)  # smooth ramp
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert bench.ssim(a, a) == 1.0
    assert bench.ssim(a, b) < 0.9
