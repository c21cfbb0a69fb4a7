"""REPORT.md is rendered from the measured numbers alone; a missed bar says what would move it."""

import json

from exporter.shapes import report as R


def _summary(background_db: float) -> dict:
    measured = {"t2i_accuracy": 0.95, "nulltext_psnr": 33.0, "nulltext_minus_ddim_db": 15.0,
                "colour_swap_accuracy": 0.85, "colour_swap_background_psnr": background_db}
    return {
        "t2i": None, "scenes": 2, "psnr": {"vae": 34.0, "ddim": 18.0, "npi": 30.0, "direct": 33.0, "nulltext": 33.0},
        "seconds_nulltext_mean": 10.0, "nulltext_unet_forward_mean": 1100, "nulltext_unet_backward_mean": 460,
        "colour_swap": {"accuracy": 0.85, "background_psnr": background_db, "edit_psnr": 18.0,
                        "reconstruction_background_psnr": 37.0, "mask_coverage": 0.9, "full_masks": 1},
        "bars": {k: {"bar": f"{op} {v}", "measured": measured[k], "met": measured[k] >= v}
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
    assert "| colour_swap_background_psnr | >= 25.0 | 20.000 | **no** |" in text
    assert "| 0.850 | 20.00 dB | 18.00 dB | 37.00 dB | 0.90 | 1 of 2 |" in text
    assert "## Missed bars" in text and "EDIT_DIAGNOSTICS.md" in text


def test_no_missed_section_when_every_bar_is_met():
    assert "Missed bars" not in R.markdown(_summary(26.0), "cmd", "m", "cpu")
