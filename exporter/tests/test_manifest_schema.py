"""The one schema of nti.json: the shipped and fixture manifests match it, and the broken ones the engine
refuses are refused here too, before the exporter would write them."""

import copy
import json
from pathlib import Path

import pytest

from exporter.manifest_schema import check_manifest

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [ROOT / "models/shapes-tiny/nti.json", ROOT / "test/fixtures/tiny/model/nti.json"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.parent.name)
def test_shipped_manifests_match_the_schema(path):
    check_manifest(json.loads(path.read_text()))


@pytest.mark.parametrize("change, field", [
    (lambda m: m["scheduler"].update(beta_start=-1), "scheduler.beta_start"),
    (lambda m: m.update(vae_scaling_factor=0), "vae_scaling_factor"),
    (lambda m: m["attention"].update(map_resolution=0), "attention.map_resolution"),
    (lambda m: m["tokenizer"].update(max_length=50_000_000), "tokenizer.max_length"),
    (lambda m: m["graphs"]["unet"].update(file="../tiny/unet/model.onnx"), "graphs.unet.file"),
    (lambda m: m["tokenizer"].update(file="/etc/passwd"), "tokenizer.file"),
    (lambda m: m["graphs"].pop("unet"), "graphs"),
    (lambda m: m.update(format_version=3), "format_version"),
])
def test_broken_manifests_are_refused_naming_the_field(change, field):
    manifest = copy.deepcopy(json.loads(MANIFESTS[1].read_text()))
    change(manifest)
    with pytest.raises(ValueError, match=f"nti.json: {field.replace('.', '[.]')}:"):
        check_manifest(manifest)


def test_the_family_written_is_sd2_only_for_sd2s_conditioning():
    from types import SimpleNamespace

    from exporter.export import model_family

    def family(**config):
        return model_family(SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(**config))))

    assert family(cross_attention_dim=768, use_linear_projection=False) == "sd1"  # SD 1.x
    assert family(cross_attention_dim=1024, use_linear_projection=True) == "sd2"  # SD 2.x
    assert family(cross_attention_dim=32) == "sd1"  # the tiny and shapes configs
    assert family(cross_attention_dim=32, use_linear_projection=True) == "sd2"  # the sd21-tiny test config
    manifest = json.loads(MANIFESTS[1].read_text())
    check_manifest({**manifest, "family": "sd2"})
    with pytest.raises(ValueError, match="nti.json: family:"):
        check_manifest({**manifest, "family": "sdxl"})
