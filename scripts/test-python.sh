#!/usr/bin/env bash
# Runs the exporter's pytest suite, first creating the Python environment it needs (.venv, from the
# pinned exporter/requirements.txt) when it is missing or the requirements changed. Slow cases (full-size
# SD exports) are left out; run them with: scripts/test-python.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NTI_PYTHON_VENV:-.venv}"
PY="${NTI_PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if ! cmp -s exporter/requirements.txt "$VENV/.requirements-installed"; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r exporter/requirements.txt
  cp exporter/requirements.txt "$VENV/.requirements-installed"
fi
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
exec "$VENV/bin/python" -m pytest exporter/tests -q -p no:cacheprovider "$@"
