#!/usr/bin/python3
# The packaged daemon starts from the packaged config: unpacks nothing itself (the packaging_deb
# fixture left BUILD/packaging-test/root), copies root/etc/prefixd/prefixd.toml with only the
# site-specific paths changed (model, db, endpoint, server key) and runs root/usr/sbin/prefixd
# --config on it, under the socket address families its unit allows. It must send READY=1 through NOTIFY_SOCKET, answer Health over CURVE through the
# packaged Python client for a tenant made by the packaged prefixctl (and refuse an unknown key),
# then send STOPPING=1 and exit 0 on SIGTERM.
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BUILD = os.environ.get("PREFIXD_BUILD_DIR", "build")
MODELS = os.environ.get("PREFIXD_TEST_MODELS", os.path.join(BUILD, "test-models"))
ROOT = os.path.join(BUILD, "packaging-test", "root")
sys.path.insert(0, os.path.join(ROOT, "usr", "lib", "python3", "dist-packages"))
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))

import prefixd_client  # noqa: E402  (the packaged one)
from test_python_client_util import Daemon, new_server_key  # noqa: E402


def set_key(text, section, key, value):
    """Replaces `key = ...` inside [section] of a TOML text; fails if the key is not there."""
    out, cur, done = [], None, False
    for line in text.splitlines():
        m = re.match(r"\s*\[([A-Za-z0-9_.]+)\]\s*$", line)
        if m:
            cur = m.group(1)
        elif cur == section and re.match(r"\s*%s\s*=" % re.escape(key), line):
            line, done = "%s = %s" % (key, value), True
        out.append(line)
    if not done:
        raise AssertionError("packaged prefixd.toml has no [%s] %s" % (section, key))
    return "\n".join(out) + "\n"


class PackagedDaemon(unittest.TestCase):
    def test_ready_from_packaged_config(self):
        binary = os.path.join(ROOT, "usr", "sbin", "prefixd")
        conf_src = os.path.join(ROOT, "etc", "prefixd", "prefixd.toml")
        self.assertTrue(os.access(binary, os.X_OK), "unpacked package lacks usr/sbin/prefixd")
        self.assertTrue(prefixd_client.__file__.startswith(ROOT), prefixd_client.__file__)
        tmp = tempfile.mkdtemp(prefix="prefixd-pkg-")
        try:
            model = os.path.join(MODELS, "tiny-v2-f32.gguf")
            self.assertTrue(os.path.isfile(model), model)
            server_pub = new_server_key(os.path.join(tmp, "server.key"))
            endpoint = "ipc://%s/prefixd.sock" % tmp
            # a loopback tcp endpoint too, as the packaged default has: libzmq's tcp bind needs more
            # than the obvious address families (it aborted under the unit's list before AF_NETLINK)
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                tcp = "tcp://127.0.0.1:%d" % probe.getsockname()[1]
            with open(conf_src) as f:
                conf = f.read()
            conf = set_key(conf, "engine", "model", '"%s"' % model)
            conf = set_key(conf, "store", "db", '"%s/prefixd.db"' % tmp)
            conf = set_key(conf, "server", "endpoints", '["%s", "%s"]' % (endpoint, tcp))
            conf = set_key(conf, "server", "server_key_file", '"%s/server.key"' % tmp)
            conf_path = os.path.join(tmp, "prefixd.toml")
            with open(conf_path, "w") as f:
                f.write(conf)
            prefixctl = os.path.join(ROOT, "usr", "bin", "prefixctl")
            key_file = os.path.join(tmp, "ops.key")
            subprocess.run([prefixctl, "--db", os.path.join(tmp, "prefixd.db"), "tenant", "add", "ops",
                            "--key-file", key_file], check=True, capture_output=True, timeout=60)
            t0 = time.monotonic()
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "packaging",
                                   "prefixd.service")) as f:
                families = re.search(r"^RestrictAddressFamilies=(.*)$", f.read(), re.M).group(1).strip()
            restrict = os.path.join(BUILD, "bin", "restrict_af")
            self.assertTrue(os.access(restrict, os.X_OK), restrict)
            d = Daemon([restrict, families, binary, "--config", conf_path])
            try:
                d.wait_for("READY=1", timeout=300)
                ready_s = time.monotonic() - t0
                print("READY=1 after %.2fs; notify: %s" % (ready_s, d.notify))
                self.assertTrue(any(n.startswith("STATUS=") for n in d.notify), "no STATUS= line")
                with prefixd_client.Client(endpoint, server_key=server_pub, client_key_file=key_file,
                                           timeout=60) as c:
                    h = c.health()
                self.assertEqual(h.status, "ok")
                self.assertEqual(h.backend, "vulkan")  # the packaged default
                with prefixd_client.Client(tcp, server_key=server_pub, client_key_file=key_file,
                                           timeout=60) as c:
                    self.assertEqual(c.health().status, "ok")  # served on tcp as well
                self.assertGreater(h.hidden, 0)
                # Health over CURVE with an unregistered client key: the daemon must refuse it.
                pub, sec = prefixd_client.generate_keypair()
                with prefixd_client.Client(endpoint, server_key=server_pub, public_key=pub, secret_key=sec,
                                           timeout=3) as c:
                    with self.assertRaises(prefixd_client.PrefixdError):
                        c.health()
                rc = d.stop(timeout=60)
                self.assertIn("STOPPING=1", d.notify)
                self.assertEqual(rc, 0, d.log())
            finally:
                d.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
