#!/usr/bin/env bash
# Runs the exporter's pytest suite, first creating the Python environment it needs (scripts/python-env.sh).
# Slow cases (full-size SD exports) are left out; run them with: scripts/test-python.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="$(bash scripts/python-env.sh)"
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
exec "$PYTHON" -m pytest exporter/tests -q -p no:cacheprovider "$@"
