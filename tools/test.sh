#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the whole suite
# (unit, Vulkan on lavapipe, integration, a short fuzz run) through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cd build
exec ctest --output-on-failure -j2 --timeout 1500
