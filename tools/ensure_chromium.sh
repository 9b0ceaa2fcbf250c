#!/usr/bin/env bash
# Makes sure Debian's chromium exists for the browser tests (Playwright drives it; no browser is
# ever downloaded by a tool), then prints its path. Idempotent; installing needs root.
set -euo pipefail

log() { echo "ensure_chromium: $*" >&2; }
die() { log "$*"; exit 1; }

browser=${MLMESH_CHROMIUM:-/usr/bin/chromium}
if [[ -x "$browser" ]]; then
  echo "$browser"
  exit 0
fi
[[ -z "${MLMESH_CHROMIUM:-}" ]] || die "MLMESH_CHROMIUM=$MLMESH_CHROMIUM is not executable"
[[ $(id -u) -eq 0 ]] || die "installing chromium needs root (run: sudo $0)"
command -v apt-get >/dev/null 2>&1 || die "no apt-get: install chromium by hand"
log "installing Debian's chromium package"
{
  apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
} >&2 || die "apt-get install chromium failed"
[[ -x "$browser" ]] || die "chromium installed but $browser is missing"
echo "$browser"
