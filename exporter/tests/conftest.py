import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Two cores: oversubscribing threads makes every test slower.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


#: (what, deviation, bound) of every whole-trajectory comparison against the committed fixtures
_DRIFT: list[tuple[str, float, float]] = []


@pytest.fixture()
def drift():
    """Records a whole-trajectory deviation from the fixtures (max|a-b|/max|b|) and checks it against its bound."""

    def check(what: str, got: torch.Tensor, want: torch.Tensor, bound: float) -> float:
        dev = float((got - want).abs().max() / want.abs().max())
        _DRIFT.append((what, dev, bound))
        assert dev < bound, f"{what}: {dev:.3g} off the fixture (bound {bound:g})"
        return dev

    return check


def pytest_terminal_summary(terminalreporter):
    """One line, so that a drift between CPUs shows before it fails (issue: tests pass on any x86-64 CPU)."""
    if _DRIFT:
        what, dev, bound = max(_DRIFT, key=lambda d: d[1] / d[2])
        terminalreporter.write_line(f"[drift] largest whole-trajectory deviation from the fixtures: {dev:.2e} "
                                    f"({what}; bound {bound:g}, {bound / max(dev, 1e-30):.0f}x headroom)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: full-size SD exports (minutes, GBs); run with -m slow")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """The tiny random model, exported once per session (the gradient graph dominates: ~30 s)."""
    from exporter.configs import build_random
    from exporter.export import export_components

    out = tmp_path_factory.mktemp("models") / "tiny"
    export_components(build_random("tiny", seed=0), out, quiet=True)
    return out


@pytest.fixture()
def tiny():
    """Fresh tiny random components with the same weights as tiny_folder."""
    from exporter.configs import build_random

    return build_random("tiny", seed=0)
