#!/usr/bin/env bash
# Checks packaging/prefixd.service: the hardening directives the design requires are present,
# `systemd-analyze verify` passes on a copy whose ExecStart points at the built prefixd, and
# `systemd-analyze security --offline=yes` rates its exposure at 2.0 or better.
# Usage: test_packaging_unit.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
unit=$src/packaging/prefixd.service
bin=$build/bin/prefixd
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$bin" ] || fail "built daemon $bin missing (build the prefixd target first)"

for d in 'Type=notify' 'WatchdogSec=' 'Restart=on-failure' 'User=prefixd' 'Group=prefixd' 'UMask=0007' \
         'StateDirectory=prefixd' 'RuntimeDirectory=prefixd' 'ConfigurationDirectory=prefixd' \
         'DeviceAllow=char-drm rw' 'DeviceAllow=/dev/nvidiactl rw' 'SupplementaryGroups=render video' \
         'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' 'NoNewPrivileges=yes' \
         'SystemCallFilter=@system-service' 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK' 'RestartPreventExitStatus=2' \
         'MemoryMax=' 'CapabilityBoundingSet=' 'ExecStart=/usr/sbin/prefixd '; do
    grep -q "^$d" "$unit" || fail "unit lacks '$d'"
done
grep -q '^MemoryDenyWriteExecute=yes' "$unit" && fail "MemoryDenyWriteExecute breaks lavapipe's JIT"
grep -q '^DynamicUser=yes' "$unit" && fail "DynamicUser: prefixctl could not share the group"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The same unit, with ExecStart naming the binary that exists in this build tree.
sed "s#^ExecStart=/usr/sbin/prefixd#ExecStart=$bin#" "$unit" > "$tmp/prefixd.service"
grep -q "^ExecStart=$bin " "$tmp/prefixd.service" || fail "ExecStart rewrite failed"
out=$(systemd-analyze verify "$tmp/prefixd.service" 2>&1) || fail "systemd-analyze verify: $out"
# verify exits 0 on some warnings: treat any line naming our unit as a failure.
if grep -q 'prefixd.service' <<<"$out"; then fail "systemd-analyze verify warned: $out"; fi
echo "verify: ok"

sec=$(systemd-analyze security --offline=yes "$tmp/prefixd.service" 2>&1) || fail "security: $sec"
score=$(sed -n 's/.*Overall exposure level for prefixd.service: \([0-9.]*\).*/\1/p' <<<"$sec")
[ -n "$score" ] || fail "no exposure score in: $(tail -3 <<<"$sec")"
echo "exposure: $score"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $score > 2.0"

# sysusers/tmpfiles entries apply cleanly to a scratch root.
mkdir -p "$tmp/root/etc"
systemd-sysusers --root="$tmp/root" "$src/packaging/sysusers.conf" 2>&1 || fail "systemd-sysusers rejects sysusers.conf"
grep -q '^prefixd:' "$tmp/root/etc/passwd" || fail "sysusers created no prefixd user"
grep -q '^prefixd:' "$tmp/root/etc/group" || fail "sysusers created no prefixd group"
systemd-tmpfiles --root="$tmp/root" --create "$src/packaging/tmpfiles.conf" ||
    fail "systemd-tmpfiles --create failed"
mode=$(stat -c %a "$tmp/root/var/lib/prefixd")
[ "$mode" = 2770 ] || fail "/var/lib/prefixd mode $mode, want 2770 (setgid: files admins create there belong to group prefixd)"
echo "PASS"
