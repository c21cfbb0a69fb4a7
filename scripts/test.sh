#!/usr/bin/env bash
# All the tests: typecheck, bundle, the engine/CLI/webview node tests, the extension end to end in
# code-server (scripts/e2e: installs a cached code-server and Debian packages it needs), then the exporter's pytest
# (scripts/test-python.sh creates the Python environment it needs by itself).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi
# the webview tests drive Debian's chromium (playwright-core downloads no browser)
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; else echo "install Debian's chromium for the webview tests" >&2; exit 1; fi
fi
echo "== typecheck" && npx tsc --noEmit -p . && npx tsc --noEmit -p webview && npx tsc --noEmit -p test/e2e
# ESLint, knip (unused files, exports and dependencies), Prettier: package.json's "lint"
echo "== lint" && npm run --silent lint
echo "== build" && node scripts/build.mjs
# The parity tests record each whole-trajectory deviation from the reference's fixtures; one line reports the
# largest, so a drift between CPUs is visible before it fails (docs/tolerances.md).
DRIFT_FILE="$(mktemp)"; trap 'rm -f "$DRIFT_FILE"' EXIT
echo "== node tests" && NTI_DRIFT_FILE="$DRIFT_FILE" node --import tsx --test --test-reporter=spec test/node/*.test.ts
NTI_DRIFT_FILE="$DRIFT_FILE" node --import tsx test/node/helpers/drift-summary.ts
echo "== end-to-end, in a real VS Code build (code-server)" && bash scripts/e2e/install-code-server.sh >/dev/null && node scripts/e2e/run.mjs
echo "== python tests" && bash scripts/test-python.sh
# the .vsix files users install, one per platform, build from a fresh clone (no repository URL needed) and
# each carries only its platform's native binaries
echo "== package" && npm run --silent package
echo "== packages" && node --import tsx --test --test-reporter=spec test/package/*.test.ts
