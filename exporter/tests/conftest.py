import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Two cores: oversubscribing threads makes every test slower.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
