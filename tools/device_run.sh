#!/bin/bash
# Runs the Vulkan engine's checks and benchmarks from a bundle made by tools/device_bundle.sh, on a
# machine without our build dependencies (a lent GPU machine; it also runs here on lavapipe):
#   devices, the per-op and whole-model Vulkan tests against the CPU reference (the latter again with
#   reversed phases under the validation layer), prefixctl bench on
#   the tiny models, and the V2-Lite shape in Q8_0 (a 4-layer cut in `quick`, all 27 layers in `full`;
#   `smoke` stops after the tiny Q8_0 bench, to check a bundle).
# Logs go to $OUT (the device tool's folder) or ./device-out.
#
#   bash tools/device_run.sh BUNDLE_DIR [quick|full]
set -uo pipefail
bundle=${1:?bundle dir (tools/device_bundle.sh)}
mode=${2:-quick}
out=${OUT:-$PWD/device-out}
work=${DEVICE_WORK:-/tmp/prefixd-device}
[ -f "$bundle/bundle.tar.xz" ] || { echo "device_run: $bundle/bundle.tar.xz not found (tools/device_bundle.sh makes it)" >&2; exit 1; }
case $mode in smoke | quick | full) ;; *) echo "device_run: mode must be smoke, quick or full, not '$mode'" >&2; exit 1 ;; esac
mkdir -p "$out" "$work"
rm -rf "$work/b" && mkdir -p "$work/b" && tar -C "$work/b" -xJf "$bundle/bundle.tar.xz" || exit 1
B=$work/b
export LD_LIBRARY_PATH="$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d /usr/local/nvidia/lib64 ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"
export PATH="$B/bin:$PATH"
export VK_MATVEC_BENCH_GLSLANG="$B/bin/glslangValidator" VK_MATVEC_BENCH_SHADER="$B/vk_matvec_bench.comp"
# the NVIDIA driver's Vulkan ICD where the image keeps it (device README)
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES=$icd; fi
done
log=$out/device_run.log
failed=0
step() { # step NAME COMMAND...: runs it, its output to the log and NAME.txt, and says how it ended
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$log"
    local t0=$SECONDS
    "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.txt" >> "$log"
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
    [ $rc -eq 0 ] || failed=1
    return $rc
}
: > "$log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$log" 2>&1 || true
step devices prefixctl devices
models=$work/models
step gen_models gen_model --test-set "$models" --tokenizer "$B/tokenizer.json"
export PREFIXD_TEST_MODELS=$models
if [ "$mode" != smoke ]; then
    step test_vk_ops test_vk_ops
    step test_vk_model test_vk_model
    # again with each phase's dispatches in reverse order (a missing barrier gives wrong logits on
    # any device) under the validation layer (an error fails it), where the bundle carries it
    if [ -f "$B/layers/VkLayer_khronos_validation.json" ]; then
        VK_ADD_LAYER_PATH="$B/layers" PREFIXD_VK_REORDER=1 PREFIXD_VK_VALIDATION=1 step test_vk_model_checked test_vk_model
    fi
fi
step bench_tiny_f32 prefixctl bench --model "$models/tiny-v2-f32.gguf" -p 64 -n 32 -r 3 --batch 8
step bench_tiny_q8 prefixctl bench --model "$models/tiny-v2-q8_0.gguf" -p 64 -n 32 -r 3 --batch 8
if [ "$mode" = smoke ]; then
    echo "device_run: smoke run done; logs in $out" | tee -a "$log"
    exit $failed
fi
layers="--layers 4"
[ "$mode" = full ] && layers=""
step gen_v2lite gen_model --config v2-lite --type q8_0 $layers --tokenizer "$B/tokenizer.json" -o "$work/v2lite.gguf"
step bench_v2lite prefixctl bench --model "$work/v2lite.gguf" -p 128 -n 32 -r 3 --batch 8
step bench_v2lite_f16kv prefixctl bench --model "$work/v2lite.gguf" -p 128 -n 32 -r 3 --batch 8 --kv-cache f16
# each step in one submit (GPU default: a submit every 4 layers, so the device starts while the
# host records): compare decode tok/s and the "decode step: host" line with bench_v2lite
PREFIXD_VK_SUBMIT_LAYERS=0 step bench_v2lite_one_submit prefixctl bench --model "$work/v2lite.gguf" -p 128 -n 32 -r 3 --batch 1
# the raw mat-vec forms on the output projection's shape (GPU: the device-address forms matter)
step matvec vk_matvec_bench 102400 2048 20
echo "device_run: done; logs in $out" | tee -a "$log"
exit $failed
