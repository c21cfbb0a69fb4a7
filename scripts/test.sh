#!/usr/bin/env bash
# All the tests: typecheck, bundle, the engine/CLI/webview-side node tests, then the exporter's pytest
# (scripts/test-python.sh creates the Python environment it needs by itself).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi
# the webview tests drive Debian's chromium (playwright-core downloads no browser)
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; else echo "install Debian's chromium for the webview tests" >&2; exit 1; fi
fi
echo "== typecheck" && npx tsc --noEmit -p . && npx tsc --noEmit -p webview
echo "== build" && node scripts/build.mjs
echo "== node tests" && node --import tsx --test --test-reporter=spec test/node/*.test.ts
echo "== python tests" && bash scripts/test-python.sh
