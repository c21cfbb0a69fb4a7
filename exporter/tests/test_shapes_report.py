"""REPORT.md is rendered from the measured numbers alone; a missed bar says what would move it."""

import json

from exporter.shapes import report as R


def _edit(background_db: float, coverage: float = 0.4) -> dict:
    return {"accuracy": 0.95, "background_psnr": background_db, "background_psnr_p10": background_db - 2.0,
            "scenes_below_24db": 0, "edit_psnr": 18.0, "reconstruction_background_psnr": 37.0, "object_iou": 0.9,
            "mask_coverage": coverage, "mask_coverage_one_object": coverage, "full_masks": 1}


def _summary(background_db: float) -> dict:
    edits = {name: _edit(background_db) for name in (*R.EDIT_KINDS, *R.COLOUR_VARIANTS)}
    edits["colour_full_injection"]["background_psnr"] = 30.0
    measured = {"t2i_accuracy": 0.95, "nulltext_psnr": 33.0, "nulltext_minus_ddim_db": 15.0,
                "colour_swap_accuracy": 0.95, "colour_swap_background_psnr": background_db,
                "colour_swap_background_psnr_p10": background_db - 2.0, "colour_swap_mask_share_one_object": 0.4,
                "colour_swap_full_injection_background_psnr": 30.0, "shape_swap_object_iou": 0.9,
                "background_swap_object_iou": 0.9}
    return {
        "t2i": None, "scenes": 2, "psnr": {"vae": 34.0, "ddim": 18.0, "npi": 30.0, "direct": 33.0, "nulltext": 33.0},
        "seconds_nulltext_mean": 10.0, "nulltext_unet_forward_mean": 1100, "nulltext_unet_backward_mean": 460,
        "edits": edits,
        "bars": {k: {"bar": f"{op} {v}", "measured": measured[k],
                     "met": measured[k] >= v if op == ">=" else measured[k] <= v}
                 for k, (op, v) in R.BARS.items()},
        "rows": [],
        "run": {"command": "python -m exporter.shapes.report --model m", "model": "m", "device": "cpu",
                "torch": "9.9", "machine": "riscv", "workers": 3},
    }


def test_render_only_writes_the_report_from_the_json(tmp_path):
    js, md = tmp_path / "report.json", tmp_path / "REPORT.md"
    js.write_text(json.dumps(_summary(20.0)))
    assert R.main(["--model", "m", "--out", str(md), "--json", str(js), "--render-only"]) == 0
    text = md.read_text()
    assert "python -m exporter.shapes.report --model m" in text
    assert "torch 9.9; riscv" in text and "3 worker processes" in text  # the run's, not this process's
    assert "| colour_swap_background_psnr | >= 27.0 | 20.000 | **no** |" in text
    assert "| colour swap | 0.95 | 20.00 / 18.00 dB / 0 | 18.00 dB | 37.00 dB | 0.90 | 0.40 (0.40) | 1 of 2 |" in text
    assert "| colour swap, cross 1 / self 1, no blend | 0.95 | 30.00 / 18.00 dB / 0 |" in text
    assert "## Missed bars" in text


def test_no_missed_section_when_every_bar_is_met():
    assert "Missed bars" not in R.markdown(_summary(28.0), "cmd", "m", "cpu")


def test_a_bar_of_at_most_is_met_below_it():
    s = _summary(28.0)
    assert s["bars"]["colour_swap_mask_share_one_object"]["met"]
    assert "| colour_swap_mask_share_one_object | <= 0.5 | 0.400 | yes |" in R.markdown(s, "cmd", "m", "cpu")
