#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the whole suite
# (unit, Vulkan on lavapipe, integration, a short fuzz run) through ctest, then the C++ tests again
# in a sanitizer build (tools/sanitize.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
(cd build && ctest --output-on-failure -j2 --timeout 1500)
# The same C++ once more under AddressSanitizer + UBSan (build-asan/, ~14 min on 2 cores).
# PREFIXD_SANITIZE=0 skips it.
if [ "${PREFIXD_SANITIZE:-1}" != 0 ]; then
    tools/sanitize.sh build-asan
fi
