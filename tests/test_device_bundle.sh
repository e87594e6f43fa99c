#!/bin/sh
# tools/device_bundle.sh + tools/device_run.sh smoke, as a lent GPU machine would run them, here
# on lavapipe with a bare environment: the bundle must carry every library and file the engine's
# binaries need, and the run must list a device, generate the test models and bench one.
set -eu
src=$1
build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sh "$src/tools/device_bundle.sh" "$build" "$work/bundle"
size=$(stat -c %s "$work/bundle/bundle.tar.xz")
[ "$size" -lt $((48 * 1024 * 1024)) ] || { echo "bundle is $size bytes: too big to travel (64 MiB in all)"; exit 1; }
cd "$work"
env -i PATH=/usr/bin:/bin HOME="$work" OUT="$work/out" DEVICE_WORK="$work/dev" \
    bash "$src/tools/device_run.sh" "$work/bundle" smoke
grep -q '^\* 0 ' "$work/out/devices.txt" || { echo "no default device listed"; cat "$work/out/devices.txt"; exit 1; }
grep -q 'decode tg32' "$work/out/bench_tiny_q8.txt" || { echo "no decode figure"; cat "$work/out/bench_tiny_q8.txt"; exit 1; }
[ "$(grep -c ': exit 0 after' "$work/out/device_run.log")" -eq 4 ] || { cat "$work/out/device_run.log"; exit 1; }
echo "device bundle smoke run: ok ($size bytes)"
