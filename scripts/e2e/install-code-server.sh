#!/usr/bin/env bash
# Installs code-server (a real VS Code build with a Node extension host) from npm into a cache
# folder outside the repo, for scripts/e2e/run.mjs. Idempotent: a stamp file records a finished
# install, so a second run only prints the binary path. Prints that path as its only stdout line;
# progress goes to stderr.
#
# Why by hand: code-server's own postinstall runs `npm install` in lib/vscode, whose postinstalls
# download ripgrep and prebuilt binaries from GitHub, unreachable here. So we install with
# --ignore-scripts, put Debian's rg where @vscode/ripgrep expects it, build the native modules
# from source against the local Node headers, and make postinstall.sh's symlinks ourselves.
#
# Env: NTI_E2E_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/nti-e2e),
#      NTI_E2E_NODEDIR (Node headers prefix; default: the prefix of the running node).
set -euo pipefail

VERSION=4.100.3 # embeds VS Code 1.100.3; newer code-server needs Node > 20
CACHE="${NTI_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nti-e2e}"
DIR="$CACHE/code-server-$VERSION"
BIN="$DIR/node_modules/code-server/out/node/entry.js"
STAMP="$DIR/.nti-installed"
DEBIAN_PACKAGES=(ripgrep chromium libkrb5-dev build-essential python3)

log() { echo "[install-code-server] $*" >&2; }
die() { echo "[install-code-server] ERROR: $*" >&2; exit 1; }

command -v node >/dev/null || die "node is not on PATH"
command -v npm >/dev/null || die "npm is not on PATH"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[ "$NODE_MAJOR" = 20 ] || die "code-server $VERSION needs Node 20 (found $(node -v))"
# Native modules are built for this Node ABI: a different node means a rebuild.
STAMP_TEXT="code-server $VERSION node-abi $(node -p process.versions.modules) $(uname -m)"

# --- Debian packages (checked even with a cached install: CI may restore the cache on a fresh machine) ---
missing=()
command -v rg >/dev/null || missing+=(ripgrep)
command -v chromium >/dev/null || missing+=(chromium)
command -v krb5-config >/dev/null || missing+=(libkrb5-dev) # kerberos' binding.gyp calls it
{ command -v make && command -v g++; } >/dev/null || missing+=(build-essential)
command -v python3 >/dev/null || missing+=(python3) # node-gyp
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
  else
    die "missing ${missing[*]}; install the Debian packages: ${DEBIAN_PACKAGES[*]}"
  fi
fi

installed() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ] && [ -f "$BIN" ]; }
if installed; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # another install running at the same time: wait for it, then use its result
if installed; then
  echo "$BIN"
  exit 0
fi

# --- Node headers for node-gyp (it cannot download them here) ---
NODEDIR="${NTI_E2E_NODEDIR:-$(dirname "$(dirname "$(node -p process.execPath)")")}"
HEADER="$NODEDIR/include/node/node_version.h"
[ -f "$HEADER" ] || die "no Node headers at $NODEDIR/include/node; install the headers for $(node -v) (Debian: libnode-dev / nodejs-dev matching your node) or set NTI_E2E_NODEDIR"
HEADER_MAJOR="$(sed -n 's/^#define NODE_MAJOR_VERSION \([0-9]*\).*/\1/p' "$HEADER")"
[ "$HEADER_MAJOR" = "$NODE_MAJOR" ] || die "headers in $NODEDIR are for Node $HEADER_MAJOR, running node is $(node -v)"

# --- Install into a staging folder, then move it into place (no half-installed cache) ---
STAGE="$(mktemp -d "$CACHE/.stage-XXXXXX")"
chmod 755 "$STAGE" # mktemp makes it 0700
trap 'rm -rf "$STAGE"' EXIT
BUILD_LOG="$CACHE/install.log" # outside the stage, so it survives a failure
: >"$BUILD_LOG"
run_logged() { # runs "$@", keeping its output in the build log; shows the log's tail on failure
  if ! "$@" >>"$BUILD_LOG" 2>&1; then
    tail -n 40 "$BUILD_LOG" >&2
    die "failed: $* (in $(pwd)); full log: $BUILD_LOG"
  fi
}
export npm_config_nodedir="$NODEDIR" npm_config_yes=true npm_config_audit=false npm_config_fund=false
export npm_config_update_notifier=false JOBS=max

cd "$STAGE"
echo '{ "name": "nti-e2e-code-server", "private": true }' >package.json
log "npm install code-server@$VERSION (scripts off)"
run_logged npm install --ignore-scripts "code-server@$VERSION"

# code-server's own native dependency; node-pre-gyp would download a prebuilt from GitHub.
log "build argon2 from source"
run_logged env npm_config_build_from_source=true npm rebuild argon2 --foreground-scripts

cd node_modules/code-server/lib/vscode
log "npm install in lib/vscode (scripts off)"
run_logged npm install --omit=dev --ignore-scripts

# With bin/ present, @vscode/ripgrep's postinstall skips its GitHub download.
mkdir -p node_modules/@vscode/ripgrep/bin
cp "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg

# kerberos would try a GitHub prebuilt first; build it from source. Rebuild the other direct
# dependencies normally (@parcel/watcher then uses its npm prebuilt; node-pty's postinstall
# runs `npx node-gyp`, hence npm_config_yes).
log "build lib/vscode native modules"
run_logged env npm_config_build_from_source=true npm rebuild kerberos --foreground-scripts
mapfile -t deps < <(node -p 'Object.keys(require("./package.json").dependencies).filter((d) => d !== "kerberos").join("\n")')
run_logged npm rebuild "${deps[@]}" --foreground-scripts
for m in @vscode/spdlog/build/Release/spdlog.node node-pty/build/Release/pty.node \
  native-watchdog/build/Release/watchdog.node kerberos/build/Release/kerberos.node; do
  [ -f "node_modules/$m" ] || die "native module missing after the build: $m; full log: $BUILD_LOG"
done

# The symlinks postinstall.sh makes (we skip its `npm install` in lib/vscode/extensions: it only
# adds TypeScript for the built-in TS language features, which the tests do not use).
ln -sfn node_modules node_modules.asar
ln -sfn code-linux.sh bin/remote-cli/code-server
ln -sfn browser-linux.sh bin/helpers/browser.sh

cd "$STAGE"
node -e 'require("argon2")' || die "argon2 does not load"
rm -f "$BUILD_LOG"
echo "$STAMP_TEXT" >"$STAGE/.nti-installed"
rm -rf "$DIR"
mv "$STAGE" "$DIR"
trap - EXIT
log "installed in $DIR ($(du -sh "$DIR" | cut -f1))"
echo "$BIN"
