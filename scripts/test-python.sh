#!/usr/bin/env bash
# Runs the exporter's pytest suite, first creating the Python environment it needs (scripts/python-env.sh).
# Slow cases (full-size SD exports) are left out; run them with: scripts/test-python.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="$(bash scripts/python-env.sh)"
# Extra arguments (-q, -x, -k ...) keep the slow cases out unless they choose their own marker (-m).
case " $* " in *" -m "*) ;; *) set -- -m "not slow" "$@" ;; esac
# the linter first: pyflakes' and pycodestyle's error rules (ruff's defaults)
"$PYTHON" -m ruff check --quiet exporter
exec "$PYTHON" -m pytest exporter/tests -q -p no:cacheprovider "$@"
