# Helpers for the Python-side integration tests: start a real prefixd with a NOTIFY_SOCKET datagram
# socket (as systemd would), wait for READY=1 while collecting every sd_notify line, stop it with
# SIGTERM and return its exit status. Also writes CURVE key files in prefixd's format.
# A thread drains the datagram socket all the time, as systemd does: sd_notify blocks the daemon
# once the socket's queue is full.
import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time

import zmq


class Daemon:
    """prefixd under test. argv: full command line; `notify` collects the sd_notify lines."""

    def __init__(self, argv, env=None, log_path=None):
        self.tmp = tempfile.mkdtemp(prefix="prefixd-py-")
        self.notify_path = os.path.join(self.tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.notify = []
        self.log_path = log_path or os.path.join(self.tmp, "prefixd.log")
        e = dict(os.environ if env is None else env)
        e["NOTIFY_SOCKET"] = self.notify_path
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, env=e, stdout=self._log, stderr=subprocess.STDOUT)
        self._stop = False
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _read_loop(self):
        while not self._stop:
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if r:
                msg = self.sock.recv(65536).decode("utf-8", "replace")
                with self._lock:
                    self.notify.extend(line for line in msg.split("\n") if line)

    def _drain(self, timeout):
        """Gives the reader thread `timeout` seconds; True when new lines arrived meanwhile."""
        with self._lock:
            n = len(self.notify)
        time.sleep(timeout)
        with self._lock:
            return len(self.notify) > n

    def wait_for(self, line, timeout=300.0):
        """Waits until an sd_notify line equal to (or starting with, for 'X=') `line` arrives."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                lines = list(self.notify)
            if any(n == line or (line.endswith("=") and n.startswith(line)) for n in lines):
                return True
            if self.proc.poll() is not None and not self._drain(0.2):
                raise RuntimeError("prefixd exited with %s before %s; log:\n%s"
                                   % (self.proc.returncode, line, self.log()))
            self._drain(0.2)
        raise TimeoutError("no %s within %.0fs; notify=%s; log:\n%s" % (line, timeout, self.notify, self.log()))

    def log(self):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def stop(self, timeout=60.0):
        """SIGTERM, bounded wait; returns the exit status (SIGKILL after timeout: returns None)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        self._drain(0.3)
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stop = True
        self._reader.join()
        self.sock.close()
        self._log.close()


def write_key_file(path, public, secret=None, comment="test key"):
    """prefixd's key-file format: '# comment', 'public <z85>', optional 'secret <z85>' (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    body = "# %s\npublic %s\n" % (comment, public)
    if secret:
        body += "secret %s\n" % secret
    os.write(fd, body.encode())
    os.close(fd)


def new_server_key(path):
    pub, sec = zmq.curve_keypair()
    write_key_file(path, pub.decode(), sec.decode(), "prefixd test server key")
    return pub.decode()
