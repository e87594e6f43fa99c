#!/usr/bin/python3
"""watchdog_gap: the longest gap between prefixd's WATCHDOG=1 pings while one long prompt runs.

Starts build/bin/prefixd with a datagram socket of ours as NOTIFY_SOCKET and WATCHDOG_USEC set
(so the daemon pings at most every half of it), sends one prompt of --words words with
`prefixctl submit -n 1`, and prints the job's time, the pings during it and the longest gap.
With --cancel-after S the job is sent with the Python client (daemon/python) and cancelled S
seconds after it was sent; it prints how long the cancelled job's final reply took (a step is cut
short between its parts when the cancelled jobs fill at least half of it).
A benchmark, not a test (BENCHMARKS.md, nineteenth and twentieth rounds). Usage:
  /usr/bin/python3 tools/watchdog_gap.py --model /work/models/v2lite-q8_0.gguf [--words 300]
      [--cancel-after 20]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--words", type=int, default=300, help="prompt words (~2 tokens each)")
    ap.add_argument("--watchdog-usec", type=int, default=20_000_000)
    ap.add_argument("--max-step-ms", default="0", help="prefixd --max-step-ms")
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--cancel-after", type=float, help="cancel the job this many seconds after sending it")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="watchdog-gap-")
    sock_path = os.path.join(d, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(0.2)
    events, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                events.append((time.monotonic(), s.recv(4096).decode(errors="replace")))
            except socket.timeout:
                pass

    threading.Thread(target=reader, daemon=True).start()
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC=str(a.watchdog_usec))
    ep = "ipc://" + os.path.join(d, "p.sock")
    p = subprocess.Popen([os.path.join(a.bin, "prefixd"), "--model", a.model, "--db", os.path.join(d, "p.db"),
                          "--endpoint", ep, "--insecure-dev", "--max-step-ms", a.max_step_ms, "--max-seqs", "2",
                          "--max-ctx", str(max(1024, 4 * a.words))],
                         env=env, stderr=open(os.path.join(d, "prefixd.log"), "w"))
    try:
        while not any("READY=1" in m for _, m in events):
            if p.poll() is not None:
                sys.exit("prefixd exited; see " + os.path.join(d, "prefixd.log"))
            time.sleep(0.5)
        prompt = " ".join("w%d" % i for i in range(a.words))
        t0 = time.monotonic()
        if a.cancel_after is not None:
            out = cancel_job(ep, prompt, a.cancel_after)
        else:
            r = subprocess.run([os.path.join(a.bin, "prefixctl"), "submit", "--endpoint", ep, "--tenant", "t",
                                "--prompt", prompt, "-n", "1", "--json"], capture_output=True, text=True)
            out = "exit %d: %s" % (r.returncode, r.stdout.strip() or r.stderr.strip())
        t1 = time.monotonic()
        pings = [t for t, m in events if "WATCHDOG=1" in m and t0 <= t <= t1]
        gaps = [y - x for x, y in zip([t0] + pings, pings + [t1])]
        print("job %.1f s, %d pings during it, longest gap %.1f s" % (t1 - t0, len(pings), max(gaps)))
        print(out)
        with open(os.path.join(d, "prefixd.log")) as f:
            print("".join(line for line in f if "cut short" in line).strip())
    finally:
        p.terminate()
        p.wait()
        stop.set()


def cancel_job(ep, prompt, after):
    """Sends prompt (1 token), cancels it `after` s later; returns a line of timings."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "daemon", "python"))
    from prefixd_client import Client

    with Client(ep, tenant="t", timeout=600) as c:
        job = c.submit("generate", text=prompt, max_tokens=1)
        time.sleep(after)
        t = time.monotonic()
        c.cancel(job)
        res = c.wait(job)
        return "cancelled %.1f s after sending: final reply %.2f s after the cancel (finish %s)" % (
            after, time.monotonic() - t, res.finish)


if __name__ == "__main__":
    main()
