"""The one schema of nti.json (schemas/nti-model.schema.json), checked here before the exporter writes a
manifest, as the engine checks it when it opens one (src/core/manifest.ts)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "nti-model.schema.json"


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_manifest(manifest: dict) -> None:
    """Raises ValueError naming the first field that does not match the schema."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "the manifest"
        raise ValueError(f"nti.json: {where}: {first.message}")
