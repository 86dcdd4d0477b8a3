#!/bin/bash
# Sourced by the scripts run on a lent GPU machine (scripts/device-check.sh, scripts/device-pretrain.sh),
# in the repo root, with .gl and .devrun carried (scripts/device-prepare.sh fills them): unpacks the
# Vulkan loader + glvnd libraries, bun and node_modules, sets PATH and RL4PIX_CACHE_DIR, and checks that
# Dawn finds the GPU (falling back to the NVIDIA ICD's own file). Expects $R (the results folder).
for p in libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libopengl0 libgles2; do
  ls .gl/"${p}"_*.deb >/dev/null 2>&1 || echo "WARNING: .gl has no $p .deb (run scripts/device-prepare.sh and carry .gl)"
done
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
mkdir -p /tmp/bunbin && xz -dc .devrun/bun.xz > /tmp/bunbin/bun && chmod +x /tmp/bunbin/bun
tar -xJf .devrun/nm.tar.xz
export PATH=/tmp/bunbin:$PATH RL4PIX_CACHE_DIR=/tmp/rl4pix-cache
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv | tee "$R/nvidia-smi.txt"
if ! bun cli.ts doctor > "$R/doctor.txt" 2>&1; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  bun cli.ts doctor > "$R/doctor.txt" 2>&1 || { cat "$R/doctor.txt"; echo "device-setup: Dawn finds no GPU"; return 2 2>/dev/null || exit 2; }
fi
cat "$R/doctor.txt"
