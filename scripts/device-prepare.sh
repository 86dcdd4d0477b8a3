#!/bin/bash
# Prepares, on the development machine (x86-64, Debian), what scripts/device-check.sh carries to a
# lent GPU machine, which has no network:
#   .gl/      the Vulkan loader and the glvnd libraries the NVIDIA ICD loads (without them Dawn finds no
#             adapter: "Could not get 'vkCreateInstance' via 'vk_icdGetInstanceProcAddr' for ICD
#             libGLX_nvidia.so.0"), as .deb files fetched with `apt-get download`, i.e. from this
#             machine's own apt sources; device-check.sh unpacks them there with dpkg -x
#   .devrun/  bun.xz (node_modules/bun/bin/bun.exe) and nm.tar.xz (node_modules without bun, deno,
#             typescript and the other platforms' Dawn builds)
# Both are listed in .git/info/exclude, so a run names them in `carry`. Idempotent: existing files
# are kept unless FORCE=1.
set -eu
cd "$(dirname "$0")/.."

# The Vulkan loader and the glvnd libraries (PLATFORM.md: the H200's NVIDIA ICD needs all of them).
DEBS="libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libopengl0 libgles2"

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for d in .gl .devrun; do grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done

mkdir -p .gl .devrun
missing=""
for p in $DEBS; do ls .gl/"${p}"_*.deb >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] || [ "${FORCE:-}" = 1 ]; then
  [ "${FORCE:-}" = 1 ] && missing=" $DEBS" && rm -f .gl/*.deb
  # shellcheck disable=SC2086
  (cd .gl && apt-get download $missing) || { echo "device-prepare: apt-get download failed (run apt-get update first?)" >&2; exit 2; }
fi
for p in $DEBS; do ls .gl/"${p}"_*.deb >/dev/null 2>&1 || { echo "device-prepare: .gl lacks $p" >&2; exit 2; }; done

if [ ! -s .devrun/bun.xz ] || [ "${FORCE:-}" = 1 ]; then
  xz -T0 -6 -c node_modules/bun/bin/bun.exe > .devrun/bun.xz.part && mv .devrun/bun.xz.part .devrun/bun.xz
fi
if [ ! -s .devrun/nm.tar.xz ] || [ "${FORCE:-}" = 1 ]; then
  tar --exclude=node_modules/bun --exclude='node_modules/@oven' --exclude=node_modules/deno --exclude='node_modules/@deno' \
      --exclude=node_modules/typescript --exclude=node_modules/webgpu/dist/darwin-universal \
      --exclude=node_modules/webgpu/dist/linux-arm64 --exclude='node_modules/webgpu/dist/win32-*' \
      -cf - node_modules | xz -T0 -6 > .devrun/nm.tar.xz.part && mv .devrun/nm.tar.xz.part .devrun/nm.tar.xz
fi
du -ch .gl/*.deb .devrun/* | tail -1 | sed 's/total$/to carry: .gl .devrun/'
