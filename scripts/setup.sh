#!/bin/sh
# One idempotent set-up for `npm test`, `npm run demo`, `npm run build` and CI:
#   1. npm packages (Bun and Deno come from npm too), installed only when missing or stale;
#   2. a WebGPU adapter: when Dawn finds none, install Mesa's lavapipe Vulkan driver (Mesa >= 24).
# Quiet when nothing is missing. Exit 2 with instructions when it cannot install by itself.
set -eu
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

say() { echo "rl4pix setup: $*" >&2; }

# --- 1. npm packages -------------------------------------------------------------------------
if [ ! -x node_modules/.bin/bun ] || [ ! -f node_modules/.package-lock.json ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

# --- 2. WebGPU adapter ----------------------------------------------------------------------
if [ "${RL4PIX_SKIP_DRIVER_CHECK:-}" = 1 ] || node scripts/probe-adapter.mjs >/dev/null 2>&1; then
  exit 0
fi

say "no WebGPU adapter found; installing Mesa's lavapipe Vulkan driver"
need="libvulkan1 and mesa-vulkan-drivers (Mesa >= 24; on Debian 12 from bookworm-backports)"
if [ "$(id -u)" != 0 ]; then
  say "not root: install $need, then run this again"; exit 2
fi
if ! command -v apt-get >/dev/null 2>&1 || [ ! -r /etc/os-release ]; then
  say "not a Debian/Ubuntu system: install a Vulkan driver with Mesa >= 24 (lavapipe) or a GPU driver"; exit 2
fi
. /etc/os-release
export DEBIAN_FRONTEND=noninteractive
target=""
if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
  # Debian 12 ships Mesa 22.3, which Dawn refuses; backports has 25.x. Reuse the mirror this
  # machine already uses for bookworm (never a hard-coded host).
  uri=$(awk '
    /^URIs:/ { u = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") found = u }
    END { print found }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
  fi
  if [ -z "$uri" ]; then
    say "cannot find the bookworm mirror in /etc/apt sources: install $need by hand"; exit 2
  fi
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  cat > /etc/apt/sources.list.d/rl4pix-backports.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: $keyring
SRC
  target="-t bookworm-backports"
fi
apt-get update -qq >&2 || { say "apt-get update failed"; exit 2; }
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $target libvulkan1 mesa-vulkan-drivers >&2 \
  || { say "apt-get could not install $need"; exit 2; }

if ! node scripts/probe-adapter.mjs >/dev/null 2>&1; then
  say "the Vulkan driver is installed but Dawn still finds no adapter:"
  node scripts/probe-adapter.mjs >&2 || true
  exit 2
fi
say "WebGPU adapter: $(node scripts/probe-adapter.mjs)"
