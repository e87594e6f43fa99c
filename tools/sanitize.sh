#!/usr/bin/env bash
# Builds prefixd with AddressSanitizer + UndefinedBehaviorSanitizer (gcc, -O1, leak checking on)
# into build-asan/ (or $1) and runs the tests that drive our own C++ under it: the runner and
# sampler, the CLI, the store and ledger, the daemon over real sockets (the prefixd it starts is the
# sanitized one), and the Vulkan backend's host code on lavapipe. Any report fails the test: an
# ASan/UBSan error aborts the process, and a daemon that reports one exits non-zero.
# Not run here: test_vk_cells (one case records an invalid copy on purpose, which lavapipe executes
# as an overlapping memcpy), the whole-model Vulkan variants (the same host code as test_vk_model),
# the packaging tests, and the libFuzzer targets (already built with ASan by tests/fuzz/run.sh).
#
# PREFIXD_SANITIZER=thread: ThreadSanitizer instead (into build-tsan/ by default), over the daemon,
# runner and ledger tests on the CPU backend, with tools/tsan.supp for libzmq's internals. Not part
# of tools/test.sh; run it after changing the daemon's threads.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PREFIXD_SANITIZER:-address}" = thread ]; then
    dir="${1:-build-tsan}"
    san="-fsanitize=thread"
    flags="-O1 -g $san"
    tests=(test_daemon_jobs test_daemon_reliability test_daemon_limits test_daemon_admission test_daemon_curve
           test_runner_prefix_wait test_store_ledger)
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tools/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
else
    dir="${1:-build-asan}"
    san="-fsanitize=address,undefined"
    flags="-O1 -g -fno-omit-frame-pointer $san -fno-sanitize-recover=undefined"
    tests=(test_proto_message test_daemon_jobs test_daemon_reliability test_daemon_curve test_daemon_limits
           test_daemon_vulkan test_daemon_zap test_daemon_admission test_cpu_ops test_gguf test_model
           test_core_forward test_sampler test_runner test_core_cli test_kquant_codec test_kquant_vk
           test_runner_prefix test_runner_prefix_wait test_store_files test_store_db test_store_ledger
           test_store_cli test_tokenizer test_tokenizer_pre test_vk_ops test_vk_memory test_vk_model)
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
fi
if [ ! -f "$dir/build.ninja" ]; then
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS="$flags" \
        -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" >/dev/null
fi
cmake --build "$dir" -j"$(nproc)" --target prefixd prefixctl gen_model "${tests[@]}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
regex="^($(IFS='|'; echo "${tests[*]}"))\$"
[ "${PREFIXD_SANITIZER:-address}" = thread ] || regex="^($(IFS='|'; echo "${tests[*]}")|python_client_daemon)\$"
cd "$dir"
exec ctest --output-on-failure -j2 --timeout 1500 -R "$regex"
