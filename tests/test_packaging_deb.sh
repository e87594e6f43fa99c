#!/usr/bin/env bash
# Builds the Debian package with `cpack -G DEB` from the build tree and checks it: the file list
# (daemon, CLI, unit, sysusers/tmpfiles, conffile, Python client + generated module, docs), the
# control data (conffiles, maintainer scripts that never start the daemon), and that the packaged
# Python client imports from the unpacked tree. Leaves the .deb in BUILD_DIR/packaging-test.
# Usage: test_packaging_deb.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
out=$build/packaging-test
fail() { echo "FAIL: $*" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
(cd "$build" && cpack -G DEB -B "$out" >"$out/cpack.log" 2>&1) || { cat "$out/cpack.log"; fail "cpack -G DEB"; }
deb=$(ls "$out"/prefixd_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no prefixd_*.deb in $out: $(ls "$out")"
echo "package: $deb ($(stat -c %s "$deb") bytes)"

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's#^\./#/#' | sort > "$out/contents.txt"
for f in /usr/sbin/prefixd /usr/bin/prefixctl /usr/lib/systemd/system/prefixd.service \
         /usr/lib/sysusers.d/prefixd.conf /usr/lib/tmpfiles.d/prefixd.conf /etc/prefixd/prefixd.toml \
         /usr/lib/python3/dist-packages/prefixd_client/__init__.py \
         /usr/lib/python3/dist-packages/prefixd_client/client.py \
         /usr/lib/python3/dist-packages/prefixd_client/wire.py \
         /usr/lib/python3/dist-packages/prefixd/proto/Envelope.py \
         /usr/share/doc/prefixd/README.md /usr/share/doc/prefixd/copyright; do
    grep -qx "$f" "$out/contents.txt" || fail "package lacks $f"
done
if grep -q '__pycache__\|\.pyc$' "$out/contents.txt"; then fail "package ships Python bytecode"; fi
# Executables are executable.
dpkg-deb -c "$deb" | grep -E '\./usr/(s?bin)/prefix' | grep -qv '^-rwx' && fail "binaries not executable"

dpkg-deb -e "$deb" "$out/control"
grep -qx '/etc/prefixd/prefixd.toml' "$out/control/conffiles" || fail "prefixd.toml is not a conffile"
for s in postinst prerm postrm; do [ -x "$out/control/$s" ] || fail "maintainer script $s missing"; done
grep -q 'systemd-sysusers' "$out/control/postinst" || fail "postinst does not create the user"
grep -q 'systemd-tmpfiles --create' "$out/control/postinst" || fail "postinst does not create dirs"
grep -q 'server-key generate' "$out/control/postinst" || fail "postinst does not create the server key"
if grep -Eq '^[[:space:]]*(systemctl|deb-systemd-invoke)[[:space:]]+(start|restart|enable)' \
        "$out/control/postinst"; then
    fail "postinst starts or enables the daemon without a configured model"
fi
sh -n "$out/control/postinst" || fail "postinst syntax"
grep -q '^Depends:.*python3-zmq' "$out/control/control" || fail "Depends lacks python3-zmq"
grep -q '^Depends:.*libzmq5' "$out/control/control" || fail "shlibdeps did not add libzmq5"
grep -q '^model = ""' "$src/packaging/prefixd.toml" || fail "packaged config must ship without a model"

dpkg-deb -x "$deb" "$out/root"
[ -x "$out/root/usr/sbin/prefixd" ] || fail "unpacked prefixd not executable"
"$out/root/usr/bin/prefixctl" --help >/dev/null || fail "packaged prefixctl --help"
(cd / && env -u PREFIXD_BUILD_DIR PYTHONPATH="$out/root/usr/lib/python3/dist-packages" /usr/bin/python3 -c "
import prefixd_client, prefixd.proto, sys
root = sys.argv[1]
assert prefixd_client.__file__.startswith(root), prefixd_client.__file__
assert prefixd.proto.__file__.startswith(root), prefixd.proto.__file__
b = prefixd_client.encode_request('health', 'h1')
assert b[4:8] == b'PFXD'
" "$out/root") || fail "packaged Python client does not import"
echo "PASS"
