#!/usr/bin/python3
# The Python client against the real daemon on the tiny model, over CURVE: a tenant and an adapter
# registered with prefixctl; generate (greedy result equals `prefixctl run`), streaming equals the
# final Result, embed, adapter == same rows sent raw, score, choices, many jobs in flight, cancel,
# and the errors a client must see (unknown adapter, bad tensors, bad ranges, unknown key); job ids
# the daemon could not read back, or already in flight, refused before sending; an Error without a
# job id (a request the daemon could not read) reaches the waiting job; a timeout is PrefixdTimeout.
# The daemon runs the CPU reference backend here: this test is about the client and the protocol,
# and lavapipe decodes the tiny model ~50x slower; the Vulkan daemon is covered by daemon tests.
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("PREFIXD_SOURCE_DIR", os.path.join(HERE, ".."))
BUILD = os.environ.get("PREFIXD_BUILD_DIR", os.path.join(SRC, "build"))
MODELS = os.environ.get("PREFIXD_TEST_MODELS", os.path.join(BUILD, "test-models"))
sys.path.insert(0, os.path.join(SRC, "daemon", "python"))
sys.path.insert(1, HERE)

import prefixd_client as pc  # noqa: E402
from test_python_client_util import Daemon, new_server_key  # noqa: E402

MODEL = os.path.join(MODELS, "tiny-v2-f32.gguf")
PREFIXD = os.path.join(BUILD, "bin", "prefixd")
PREFIXCTL = os.path.join(BUILD, "bin", "prefixctl")


def ctl(db, *args, check=True):
    r = subprocess.run([PREFIXCTL, "--db", db, *args], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError("prefixctl %s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
    return r


class ClientAgainstDaemon(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="prefixd-pyclient-")
        cls.db = os.path.join(cls.tmp, "prefixd.db")
        cls.endpoint = "ipc://%s/prefixd.sock" % cls.tmp
        cls.server_pub = new_server_key(os.path.join(cls.tmp, "server.key"))
        cls.key_file = os.path.join(cls.tmp, "acme.key")
        ctl(cls.db, "tenant", "add", "acme", "--key-file", cls.key_file)
        cls.daemon = Daemon([PREFIXD, "--model", MODEL, "--db", cls.db, "--endpoint", cls.endpoint,
                             "--server-key-file", os.path.join(cls.tmp, "server.key"), "--backend", "cpu"])
        cls.daemon.wait_for("READY=1", timeout=300)
        cls.c = pc.Client(cls.endpoint, server_key=cls.server_pub, client_key_file=cls.key_file, timeout=300)
        cls.h = cls.c.health()

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        rc = cls.daemon.stop(timeout=60)
        cls.daemon.close()
        assert rc == 0, "prefixd exit status %s" % rc

    def rows(self, n, seed):
        return (0.05 * np.random.default_rng(seed).standard_normal((n, self.h.hidden))).astype(np.float32)

    def test_health(self):
        self.assertEqual(self.h.status, "ok")
        self.assertGreater(self.h.hidden, 0)
        self.assertGreater(self.h.n_vocab, 1000)

    def test_generate_equals_prefixctl_run(self):
        r = self.c.generate("The quick brown fox", max_tokens=8)
        self.assertEqual(len(r.token_ids), r.usage.completion_tokens)
        self.assertEqual(r.usage.virtual_tokens, 0)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)
        run = subprocess.run([PREFIXCTL, "run", "--model", MODEL, "--prompt", "The quick brown fox", "-n", "8",
                              "--backend", "cpu", "--json"], capture_output=True, text=True, timeout=300, check=True)
        ref = json.loads(run.stdout)
        self.assertEqual(r.token_ids, ref["token_ids"])
        self.assertEqual(r.text, ref["text"])

    def test_sampling_seed_drawn_and_repeatable(self):
        a = self.c.generate("Once upon a time", max_tokens=8, temperature=1.0)
        b = self.c.generate("Once upon a time", max_tokens=8, temperature=1.0)
        self.assertIsNotNone(a.seed)
        self.assertNotEqual(a.seed, b.seed)
        self.assertNotEqual(a.token_ids, b.token_ids)
        again = self.c.generate("Once upon a time", max_tokens=8, temperature=1.0, seed=a.seed)
        self.assertEqual(again.token_ids, a.token_ids)
        self.assertEqual(again.seed, a.seed)
        self.assertIsNone(self.c.generate("Once upon a time", max_tokens=2).seed)  # greedy

    def test_stream_matches_result(self):
        s = self.c.stream("Once upon a time", max_tokens=12)
        chunks = list(s)
        self.assertGreater(len(chunks), 0)
        self.assertEqual([t for ch in chunks for t in ch.token_ids], s.result.token_ids)
        self.assertEqual("".join(ch.text for ch in chunks), s.result.text)

    def test_embed_and_raw_embeddings(self):
        e = self.c.embed("Hello world")
        self.assertEqual(e.ndim, 2)
        self.assertEqual(e.shape[1], self.h.hidden)
        self.assertTrue(np.isfinite(e).all())
        self.assertGreater(np.abs(e).sum(), 0)
        r = self.c.generate("Hello world", embeddings=self.rows(3, 1), max_tokens=4)
        self.assertEqual(r.usage.virtual_tokens, 3)
        f16 = self.c.generate("Hello world", embeddings=self.rows(3, 1).astype(np.float16), max_tokens=4)
        self.assertEqual(f16.usage.virtual_tokens, 3)

    def test_adapter_equals_raw_rows(self):
        rows = self.rows(5, 2)
        npy = os.path.join(self.tmp, "ad.npy")
        np.save(npy, rows)
        ctl(self.db, "adapter", "add", "intents", "--tenant", "acme", "--file", npy)
        a = self.c.generate("Classify: refund please", adapter="intents", max_tokens=6)
        b = self.c.generate("Classify: refund please", embeddings=rows, max_tokens=6)
        self.assertEqual(a.usage.virtual_tokens, 5)
        self.assertEqual(a.token_ids, b.token_ids)

    def test_score(self):
        r = self.c.score("The capital of France is", " Paris, of course")
        self.assertIsNotNone(r.logprobs)
        self.assertGreater(len(r.logprobs), 0)
        self.assertTrue((r.logprobs <= 1e-6).all())
        self.assertAlmostEqual(float(r.logprobs.sum()), r.logprob_sum, places=3)

    def test_choices(self):
        labels = ["billing", "shipping", "returns"]
        r = self.c.classify("My card was charged twice. Intent:", labels)
        self.assertEqual(sorted(r.choices), sorted(labels))
        self.assertAlmostEqual(sum(r.choices.values()), 1.0, places=3)
        self.assertIn(r.text, labels)
        self.assertEqual(r.text, max(r.choices, key=r.choices.get))

    def test_many_in_flight(self):
        prompts = ["prompt number %d" % i for i in range(12)]
        ids = [self.c.submit("generate", text=p, max_tokens=5) for p in prompts]
        together = self.c.collect(ids)
        for p, r in zip(prompts[:4], together[:4]):
            self.assertEqual(self.c.generate(p, max_tokens=5).token_ids, r.token_ids)

    def test_cancel(self):
        s = self.c.stream("Count slowly:", max_tokens=400)
        it = iter(s)
        next(it)
        self.c.cancel(s.job_id)
        try:
            for _ in it:
                pass
            self.assertEqual(s.result.finish, "cancelled")
            self.assertLess(s.result.usage.completion_tokens, 400)
        except pc.PrefixdError as e:
            self.assertEqual(e.name, "Cancelled")

    def expect_error(self, name, **kw):
        with self.assertRaises(pc.PrefixdError) as cm:
            self.c.generate("hi", **kw)
        self.assertEqual(cm.exception.name, name, str(cm.exception))

    def test_errors(self):
        self.expect_error("NotFound", adapter="no-such-adapter")
        bad = np.ones((2, self.h.hidden + 1), np.float32)
        self.expect_error("InvalidTensor", embeddings=bad)
        nan = self.rows(2, 3)
        nan[1, 7] = np.nan
        self.expect_error("InvalidTensor", embeddings=nan)
        self.expect_error("InvalidArgument", max_tokens=10 ** 8)
        self.expect_error("InvalidArgument", temperature=-1.0)
        # The daemon keeps serving after all of that.
        self.assertEqual(self.c.health().status, "ok")

    def test_examples_run(self):
        """The four examples in examples/ run against this daemon and exit 0."""
        auth = ["--endpoint", self.endpoint, "--server-key", self.server_pub, "--client-key-file", self.key_file]
        admin = ["--db", self.db, "--tenant-name", "acme", "--prefixctl", PREFIXCTL]
        pt = os.path.join(self.tmp, "pt.npy")
        runs = [["ptune_classifier.py", *auth, "--steps", "1", "--out", pt],
                ["apply_prefix.py", *auth, "--prefix", pt, *admin, "-n", "4"],
                ["steer_embeddings.py", *auth, "-n", "4", "--alphas", "0,3"],
                ["route_documents.py", *auth, *admin, "-n", "4"]]
        for argv in runs:
            r = subprocess.run([sys.executable, os.path.join(SRC, "examples", argv[0]), *argv[1:]],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, "%s failed:\n%s%s" % (argv[0], r.stdout, r.stderr))
        self.assertTrue(os.path.isfile(pt))

    def test_unknown_key_gets_no_service(self):
        pub, sec = pc.generate_keypair()
        with pc.Client(self.endpoint, server_key=self.server_pub, public_key=pub, secret_key=sec, timeout=3) as c:
            with self.assertRaises(pc.PrefixdTimeout) as cm:  # the handshake fails: no reply at all
                c.generate("hi", job_id="unheard-job", max_tokens=2)
            e = cm.exception
            self.assertIsInstance(e, TimeoutError)
            self.assertIsInstance(e, pc.PrefixdError)
            self.assertEqual((e.name, e.job_id, e.timeout), ("Timeout", "unheard-job", 3))
            self.assertNotEqual(e.name, "Internal")
            self.assertIn("unheard-job", str(e))
            self.assertIn("3s", str(e))

    def test_job_ids_checked_before_sending(self):
        for bad in ("j" * 300, "j" * (pc.MAX_JOB_ID_BYTES + 1), "nul\x00id", "line\nbreak"):
            t = time.monotonic()
            with self.assertRaises(pc.JobIdError) as cm:  # before: no reply for it, a 300 s wait
                self.c.generate("hi", job_id=bad, max_tokens=2)
            self.assertLess(time.monotonic() - t, 2.0)
            self.assertEqual(cm.exception.name, "InvalidArgument")
        self.assertNotIn("", self.c._pending)
        longest = ("%s-" % uuid.uuid4().hex).ljust(pc.MAX_JOB_ID_BYTES, "k")
        r = self.c.generate("hi", job_id=longest, max_tokens=2)  # the daemon takes the longest one
        self.assertEqual((r.job_id, len(r.token_ids)), (longest, 2))

    def test_in_flight_job_id_refused(self):
        jid = "dup-" + uuid.uuid4().hex
        self.c.submit("generate", jid, text="Count to ten:", max_tokens=24)
        with self.assertRaises(pc.JobIdError) as cm:  # before: the daemon's Duplicate went to the first job
            self.c.submit("generate", jid, text="something else", max_tokens=2)
        self.assertEqual((cm.exception.name, cm.exception.job_id), ("Duplicate", jid))
        r = self.c.wait(jid)  # the first job is unaffected
        self.assertEqual((r.job_id, r.usage.completion_tokens), (jid, len(r.token_ids)))
        self.assertGreater(len(r.token_ids), 0)
        self.assertEqual(self.c.health().status, "ok")

    def test_error_without_job_id_reaches_the_waiting_job(self):
        with pc.Client(self.endpoint, server_key=self.server_pub, client_key_file=self.key_file,
                       timeout=60) as c:
            jid = c.submit("generate", text="hi", max_tokens=2)
            c._sock.send(b"not a prefixd request")  # the daemon answers it with an empty job id
            t = time.monotonic()
            with self.assertRaises(pc.PrefixdError) as cm:
                c.wait(jid)
            self.assertLess(time.monotonic() - t, 30.0)  # before: filed under "", a 60 s timeout
            self.assertNotIsInstance(cm.exception, pc.PrefixdTimeout)
            self.assertEqual((cm.exception.name, cm.exception.job_id), ("Malformed", jid))
            self.assertNotIn("", c._pending)
            self.assertEqual(c.health().status, "ok")  # the job's own late Result is dropped


if __name__ == "__main__":
    unittest.main(verbosity=2)
