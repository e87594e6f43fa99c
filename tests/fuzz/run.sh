#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into <main build>/fuzz and runs each for a bounded time
# on its seed corpus (tests/fuzz/seeds/<target>/ if present). Fails on any crash, leak or timeout.
# Usage: run.sh MAIN_BUILD_DIR [SECONDS_PER_TARGET]
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)"
main_build="$(cd "$1" && pwd)"
secs="${2:-20}"
out="$main_build/fuzz"
if [ ! -f "$out/build.ninja" ]; then
    CC=clang CXX=clang++ cmake -S "$src" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DPREFIXD_MAIN_BUILD="$main_build" >/dev/null
fi
cmake --build "$out" -j"$(nproc)"
targets=$(find "$out" -maxdepth 1 -type f -executable -name 'fuzz_*' | sort)
[ -n "$targets" ] || { echo "no fuzz targets built"; exit 1; }
for t in $targets; do
    name=$(basename "$t")
    corpus="$out/corpus/$name"
    mkdir -p "$corpus"
    if [ -d "$src/seeds/$name" ]; then cp -n "$src/seeds/$name"/* "$corpus"/ 2>/dev/null || true; fi
    echo "== $name: ${secs}s"
    rc=0
    (cd "$out" && "$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "$corpus" >"$out/$name.log" 2>&1) || rc=$?
    tail -n 12 "$out/$name.log"
    [ "$rc" -eq 0 ] || { echo "$name failed (rc=$rc); full log: $out/$name.log"; exit 1; }
done
echo "all fuzz targets ran clean"
