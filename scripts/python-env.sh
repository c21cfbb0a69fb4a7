#!/usr/bin/env bash
# Creates (or updates) the Python environment the exporter, its tests and the benchmarks need: .venv from
# the pinned exporter/requirements.txt (torch==2.13.0 is the CPU wheel). Prints the interpreter's path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NTI_PYTHON_VENV:-.venv}"
PY="${NTI_PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" >&2
fi
if ! cmp -s exporter/requirements.txt "$VENV/.requirements-installed"; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r exporter/requirements.txt >&2
  cp exporter/requirements.txt "$VENV/.requirements-installed"
fi
echo "$PWD/$VENV/bin/python"
