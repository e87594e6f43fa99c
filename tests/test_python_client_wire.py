#!/usr/bin/python3
# Python client wire tests (no daemon): requests built by prefixd_client read back field by field
# through the flatc-generated readers, replies built like the daemon builds them decode to the
# client's objects, key files parse, and malformed replies raise PrefixdError instead of crashing.
# The Client against a scripted fake daemon (a ROUTER socket in this process): errors without a job
# id reach a waiting job, timeouts raise PrefixdTimeout, bad or in-flight job ids are refused locally.
import os
import shutil
import sys
import tempfile
import time
import unittest

import flatbuffers
import numpy as np
import zmq

SRC = os.environ.get("PREFIXD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(SRC, "daemon", "python"))

import prefixd_client as pc  # noqa: E402
from prefixd_client import _proto as P  # noqa: E402


def read_envelope(buf):
    assert P.Envelope.Envelope.EnvelopeBufferHasIdentifier(buf, 0)
    return P.Envelope.Envelope.GetRootAs(buf, 0)


def payload_as(env, cls):
    t = env.Payload()
    obj = cls()
    obj.Init(t.Bytes, t.Pos)
    return obj


def reply(job_id, ptype, build_payload):
    b = flatbuffers.Builder(256)
    payload = build_payload(b)
    jid = b.CreateString(job_id)
    P.Envelope.Start(b)
    P.Envelope.AddJobId(b, jid)
    P.Envelope.AddPayloadType(b, ptype)
    P.Envelope.AddPayload(b, payload)
    b.Finish(P.Envelope.End(b), file_identifier=b"PFXD")
    return bytes(b.Output())


class RequestEncoding(unittest.TestCase):
    def test_generate_all_fields(self):
        rng = np.random.default_rng(7)
        emb = rng.standard_normal((3, 16)).astype(np.float32)
        buf = pc.encode_request("generate", "job-1", text="héllo 世界", adapter="intent", embeddings=emb,
                                max_tokens=9, temperature=0.7, top_p=0.9, top_k=40, seed=123,
                                stop=["\n", "END"], stream=True, choices=["a", "b c"], top_logprobs=3,
                                tenant="dev")
        env = read_envelope(buf)
        self.assertEqual(env.JobId(), b"job-1")
        self.assertEqual(env.PayloadType(), P.Payload.Payload.Generate)
        job = payload_as(env, P.Generate.Generate).Job()
        self.assertEqual(job.Text().decode(), "héllo 世界")
        self.assertEqual(job.Adapter(), b"intent")
        self.assertTrue(job.Stream())
        self.assertEqual([job.Choices(i) for i in range(job.ChoicesLength())], [b"a", b"b c"])
        self.assertEqual(job.TopLogprobs(), 3)
        self.assertEqual(job.Tenant(), b"dev")
        s = job.Sampling()
        self.assertEqual((s.MaxTokens(), s.TopK(), s.Seed()), (9, 40, 123))
        # no seed: the field is absent (the daemon draws one), and seed=0 is sent as 0
        for kw, want in (({}, None), ({"seed": 0}, 0)):
            env = read_envelope(pc.encode_request("generate", "job-2", text="x", temperature=1.0, **kw))
            self.assertEqual(payload_as(env, P.Generate.Generate).Job().Sampling().Seed(), want)
        self.assertAlmostEqual(s.Temperature(), 0.7, places=6)
        self.assertAlmostEqual(s.TopP(), 0.9, places=6)
        self.assertEqual([s.Stop(i) for i in range(s.StopLength())], [b"\n", b"END"])
        t = job.Embeddings()
        self.assertEqual((t.Rows(), t.Cols(), t.Dtype()), (3, 16, P.DType.DType.F32))
        got = np.frombuffer(t.DataAsNumpy().tobytes(), dtype="<f4").reshape(3, 16)
        np.testing.assert_array_equal(got, emb)

    def test_f16_embeddings_and_token_ids(self):
        emb = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float16)
        buf = pc.encode_request("embed", "e", token_ids=[0, 5, 100000], embeddings=emb)
        job = payload_as(read_envelope(buf), P.Embed.Embed).Job()
        self.assertEqual([job.TokenIds(i) for i in range(job.TokenIdsLength())], [0, 5, 100000])
        t = job.Embeddings()
        self.assertEqual((t.Dtype(), t.DataLength()), (P.DType.DType.F16, 2 * 8 * 2))
        np.testing.assert_array_equal(np.frombuffer(t.DataAsNumpy().tobytes(), "<f2").reshape(2, 8), emb)

    def test_score_cancel_health(self):
        env = read_envelope(pc.encode_request("score", "s", text="Q:", continuation=" yes"))
        sc = payload_as(env, P.Score.Score)
        self.assertEqual((sc.Continuation(), sc.Job().Text()), (b" yes", b"Q:"))
        self.assertEqual(read_envelope(pc.encode_request("cancel", "x")).PayloadType(), P.Payload.Payload.Cancel)
        cancel = payload_as(read_envelope(pc.encode_request("cancel", "x", tenant="acme")), P.Cancel.Cancel)
        self.assertEqual(cancel.Tenant(), b"acme")  # insecure-dev daemons look the job up under it
        self.assertEqual(read_envelope(pc.encode_request("health", "h")).PayloadType(), P.Payload.Payload.Health)

    def test_bad_inputs(self):
        with self.assertRaises(ValueError):
            pc.encode_request("generate", "j", embeddings=np.zeros((2, 2, 2), np.float32))
        with self.assertRaises(ValueError):
            pc.encode_request("nope", "j")


class ReplyDecoding(unittest.TestCase):
    def test_result(self):
        def build(b):
            text = b.CreateString("billing")
            lab = [b.CreateString(s) for s in ("billing", "other")]
            choices = []
            for s, p in zip(lab, (0.75, 0.25)):
                P.ChoiceProb.Start(b)
                P.ChoiceProb.AddLabel(b, s)
                P.ChoiceProb.AddProb(b, p)
                P.ChoiceProb.AddLogprob(b, float(np.log(p)))
                choices.append(P.ChoiceProb.End(b))
            P.Result.StartChoicesVector(b, 2)
            for c in reversed(choices):
                b.PrependUOffsetTRelative(c)
            cv = b.EndVector()
            P.Result.StartTokenIdsVector(b, 2)
            b.PrependInt32(8)
            b.PrependInt32(7)
            ids = b.EndVector()
            P.Usage.Start(b)
            P.Usage.AddVirtualTokens(b, 4)
            P.Usage.AddPromptTokens(b, 5)
            P.Usage.AddCompletionTokens(b, 2)
            P.Usage.AddTotalTokens(b, 11)
            u = P.Usage.End(b)
            P.Result.Start(b)
            P.Result.AddText(b, text)
            P.Result.AddTokenIds(b, ids)
            P.Result.AddFinish(b, P.FinishReason.FinishReason.Stop)
            P.Result.AddUsage(b, u)
            P.Result.AddChoices(b, cv)
            P.Result.AddLogprobSum(b, -1.5)
            P.Result.AddSeed(b, 2**64 - 1)
            return P.Result.End(b)

        jid, r = pc.decode_reply(reply("r1", P.Payload.Payload.Result, build))
        self.assertEqual(jid, "r1")
        self.assertIsInstance(r, pc.Result)
        self.assertEqual((r.text, r.token_ids, r.finish), ("billing", [7, 8], "stop"))
        self.assertEqual(r.usage, pc.Usage(4, 5, 2, 11))
        self.assertAlmostEqual(r.choices["billing"], 0.75)
        self.assertAlmostEqual(r.logprob_sum, -1.5)
        self.assertEqual(r.seed, 2**64 - 1)

    def test_embed_result_tensor(self):
        emb = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)

        def build(b):
            data = b.CreateByteVector(emb.astype("<f4").tobytes())
            P.Tensor.Start(b)
            P.Tensor.AddRows(b, 4)
            P.Tensor.AddCols(b, 6)
            P.Tensor.AddData(b, data)
            t = P.Tensor.End(b)
            P.Result.Start(b)
            P.Result.AddEmbeddings(b, t)
            return P.Result.End(b)

        _, r = pc.decode_reply(reply("e", P.Payload.Payload.Result, build))
        np.testing.assert_array_equal(r.embeddings, emb)

    def test_error_chunk_health(self):
        err = error_payload(P.ErrorCode.ErrorCode.NotFound, "adapter not found")
        _, e = pc.decode_reply(reply("x", P.Payload.Payload.Error, err))
        self.assertIsInstance(e, pc.PrefixdError)
        self.assertEqual((e.name, e.message, e.job_id), ("NotFound", "adapter not found", "x"))
        self.assertEqual((e.retriable, e.retry_after_ms), (False, 0))

        limited = error_payload(P.ErrorCode.ErrorCode.RateLimited, "tenant tokens-per-minute limit reached",
                                retriable=True, retry_after_ms=41234)
        _, e = pc.decode_reply(reply("y", P.Payload.Payload.Error, limited))
        self.assertEqual((e.name, e.retriable, e.retry_after_ms), ("RateLimited", True, 41234))
        self.assertFalse(e.replayed)
        stored = error_payload(P.ErrorCode.ErrorCode.EngineFailure, "engine failed", replayed=True)
        _, e = pc.decode_reply(reply("z", P.Payload.Payload.Error, stored))
        self.assertEqual((e.name, e.retriable, e.replayed), ("EngineFailure", False, True))

        def chunk(b):
            t = b.CreateString("ab")
            P.TokenChunk.Start(b)
            P.TokenChunk.AddIndex(b, 2)
            P.TokenChunk.AddText(b, t)
            return P.TokenChunk.End(b)

        _, c = pc.decode_reply(reply("x", P.Payload.Payload.TokenChunk, chunk))
        self.assertEqual((c.index, c.text, c.token_ids), (2, "ab", []))

        def health(b):
            s = b.CreateString("ok")
            P.HealthStatus.Start(b)
            P.HealthStatus.AddStatus(b, s)
            P.HealthStatus.AddHidden(b, 64)
            return P.HealthStatus.End(b)

        _, h = pc.decode_reply(reply("h", P.Payload.Payload.HealthStatus, health))
        self.assertEqual((h.status, h.hidden), ("ok", 64))

    def test_malformed(self):
        rng = np.random.default_rng(11)
        for bad in (b"", b"garbage", b"\x00" * 7, b"\x00" * 64, b"\xff\xff\xff\x7fPFXD" + b"\x01" * 16):
            with self.assertRaises(pc.PrefixdError):
                pc.decode_reply(bad)
        cases = []
        good = pc.encode_request("generate", "j", text="abc")
        for _ in range(200):  # truncations and byte flips of a real buffer, identifier kept
            b = bytearray(good[: int(rng.integers(8, len(good)))])
            b[int(rng.integers(0, len(b)))] ^= 0xFF
            b[4:8] = b"PFXD"
            cases.append(bytes(b))
        for bad in cases:
            try:
                pc.decode_reply(bad)  # a mutated request may still parse: it is then a valid reply
            except pc.PrefixdError as e:
                self.assertIn(e.name, ("Malformed", "Unsupported"))

    def test_bad_tensor_length(self):
        def build(b):
            data = b.CreateByteVector(b"\x00" * 10)
            P.Tensor.Start(b)
            P.Tensor.AddRows(b, 4)
            P.Tensor.AddCols(b, 6)
            P.Tensor.AddData(b, data)
            t = P.Tensor.End(b)
            P.Result.Start(b)
            P.Result.AddEmbeddings(b, t)
            return P.Result.End(b)

        with self.assertRaises(pc.PrefixdError):
            pc.decode_reply(reply("e", P.Payload.Payload.Result, build))


def error_payload(code, message, retriable=False, retry_after_ms=0, replayed=False):
    def build(b):
        m = b.CreateString(message)
        P.Error.Start(b)
        P.Error.AddCode(b, code)
        P.Error.AddMessage(b, m)
        if retriable:
            P.Error.AddRetriable(b, True)
        if retry_after_ms:
            P.Error.AddRetryAfterMs(b, retry_after_ms)
        if replayed:
            P.Error.AddReplayed(b, True)
        return P.Error.End(b)
    return build


def accepted_payload(b):
    P.Accepted.Start(b)
    P.Accepted.AddQueuePosition(b, 0)
    return P.Accepted.End(b)


def result_payload(text):
    def build(b):
        t = b.CreateString(text)
        P.Result.Start(b)
        P.Result.AddText(b, t)
        P.Result.AddFinish(b, P.FinishReason.FinishReason.Length)
        return P.Result.End(b)
    return build


class FakeDaemon:
    """A ROUTER socket standing in for prefixd: reads the client's requests, sends scripted replies."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="prefixd-fake-")
        self.endpoint = "ipc://%s/fake.sock" % self.tmp
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)
        self.peer = None

    def requests(self, n, timeout=5.0):
        """The job ids of the next n requests."""
        out = []
        for _ in range(n):
            self.assertion(self.sock.poll(int(timeout * 1000)), "no request came")
            frames = self.sock.recv_multipart()
            self.peer = frames[0]
            out.append(read_envelope(frames[-1]).JobId().decode())
        return out

    def idle(self, seconds=0.3):
        """True when no request arrives within `seconds`."""
        return not self.sock.poll(int(seconds * 1000))

    @staticmethod
    def assertion(ok, msg):
        if not ok:
            raise AssertionError(msg)

    def send(self, job_id, ptype, build):
        self.sock.send_multipart([self.peer, reply(job_id, ptype, build)])

    def error(self, job_id, code=P.ErrorCode.ErrorCode.Malformed, message="wrong file identifier"):
        self.send(job_id, P.Payload.Payload.Error, error_payload(code, message))

    def accepted(self, job_id):
        self.send(job_id, P.Payload.Payload.Accepted, accepted_payload)

    def result(self, job_id, text="ok"):
        self.send(job_id, P.Payload.Payload.Result, result_payload(text))

    def close(self):
        self.sock.close(0)
        shutil.rmtree(self.tmp, ignore_errors=True)


class ClientRouting(unittest.TestCase):
    def setUp(self):
        self.d = FakeDaemon()
        self.c = pc.Client(self.d.endpoint, tenant="dev", timeout=5)

    def tearDown(self):
        self.c.close()
        self.d.close()

    def assert_nothing_unaddressed(self):
        self.assertNotIn("", self.c._pending)

    def test_unaddressed_error_goes_to_the_one_job_in_flight(self):
        jid = self.c.submit("generate", "only", text="hi")
        self.assertEqual(self.d.requests(1), ["only"])
        self.d.error("")  # the daemon could not read the request's job id
        t = time.monotonic()
        with self.assertRaises(pc.PrefixdError) as cm:
            self.c.wait(jid)
        self.assertLess(time.monotonic() - t, 2.0)  # at once, not after the 5 s timeout
        e = cm.exception
        self.assertNotIsInstance(e, pc.PrefixdTimeout)
        self.assertEqual((e.name, e.job_id, e.message), ("Malformed", "only", "wrong file identifier"))
        self.assertIn("only", str(e))
        self.assert_nothing_unaddressed()
        self.assertEqual(self.c._pending, {})

    def test_unaddressed_error_goes_to_the_oldest_job_not_yet_accepted(self):
        ids = [self.c.submit("generate", j, text="hi") for j in ("a", "b", "c")]
        self.assertEqual(self.d.requests(3), ids)
        self.d.accepted("a")
        self.d.error("")  # belongs to b: a was already read (Accepted), b is the oldest unread
        self.d.accepted("c")
        self.d.result("a", "ra")
        self.d.result("c", "rc")
        self.assertEqual(self.c.wait("a").text, "ra")
        with self.assertRaises(pc.PrefixdError) as cm:
            self.c.wait("b")
        self.assertEqual((cm.exception.name, cm.exception.job_id), ("Malformed", "b"))
        self.assertEqual(self.c.wait("c").text, "rc")
        self.assert_nothing_unaddressed()
        self.assertEqual(self.c._pending, {})

    def test_unaddressed_error_with_no_job_to_claim_it_is_dropped(self):
        self.c.submit("generate", "a", text="hi")
        self.c.submit("generate", "b", text="hi")
        self.assertEqual(self.d.requests(2), ["a", "b"])
        self.d.accepted("a")
        self.d.accepted("b")
        self.d.error("")    # both already read by the daemon: no job to give this to
        self.d.error("zz")  # an id this client never sent
        self.d.result("a", "ra")
        self.d.result("b", "rb")
        self.assertEqual(self.c.wait("a").text, "ra")
        self.assertEqual(list(self.c._pending), ["b"])  # "" and "zz" were not kept
        self.assertEqual(self.c.wait("b").text, "rb")
        self.assertEqual(self.c._pending, {})

    def test_timeout_is_its_own_error(self):
        self.c.timeout = 0.3
        jid = self.c.submit("generate", "slow-job", text="hi")
        self.d.requests(1)
        t = time.monotonic()
        with self.assertRaises(pc.PrefixdTimeout) as cm:
            self.c.wait(jid)
        self.assertGreaterEqual(time.monotonic() - t, 0.25)
        e = cm.exception
        self.assertIsInstance(e, TimeoutError)
        self.assertIsInstance(e, pc.PrefixdError)  # callers catching PrefixdError still catch it
        self.assertEqual((e.name, e.job_id, e.timeout), ("Timeout", "slow-job", 0.3))
        self.assertNotEqual(e.code, P.ErrorCode.ErrorCode.Internal)
        self.assertIn("slow-job", str(e))
        self.assertIn("0.3s", str(e))
        # the job stays in flight: a second wait gets its late Result
        self.d.result(jid, "late")
        self.assertEqual(self.c.wait(jid).text, "late")
        # streams and health time out the same way
        s = self.c.stream("hi", job_id="slow-stream")
        self.d.requests(1)
        with self.assertRaises(pc.PrefixdTimeout):
            list(s)
        with self.assertRaises(pc.PrefixdTimeout):
            self.c.health()

    def test_unaddressed_error_skips_a_job_that_timed_out(self):
        self.c.timeout = 0.2
        self.c.submit("generate", "lost", text="hi")
        with self.assertRaises(pc.PrefixdTimeout):
            self.c.wait("lost")
        self.c.submit("generate", "new", text="hi")
        self.d.requests(2)
        self.d.error("")
        self.c.timeout = 5
        with self.assertRaises(pc.PrefixdError) as cm:
            self.c.wait("new")
        self.assertEqual((cm.exception.name, cm.exception.job_id), ("Malformed", "new"))

    def test_in_flight_job_id_refused(self):
        jid = self.c.submit("generate", "dup", text="first", max_tokens=50)
        self.assertEqual(self.d.requests(1), ["dup"])
        with self.assertRaises(pc.JobIdError) as cm:
            self.c.submit("generate", "dup", text="second")
        self.assertIsInstance(cm.exception, ValueError)
        self.assertEqual((cm.exception.name, cm.exception.job_id), ("Duplicate", "dup"))
        self.assertIn("in flight", str(cm.exception))
        with self.assertRaises(pc.JobIdError):
            self.c.generate("second", job_id="dup")
        self.assertTrue(self.d.idle(), "the refused submit reached the daemon")
        self.d.accepted("dup")
        self.d.result("dup", "first result")
        self.assertEqual(self.c.wait(jid).text, "first result")  # the first job is unaffected
        # once its final reply is read the id may be sent again (the daemon replays the outcome)
        self.c.submit("generate", "dup", text="again")
        self.assertEqual(self.d.requests(1), ["dup"])
        self.d.result("dup", "replayed")
        self.assertEqual(self.c.wait("dup").text, "replayed")
        with self.assertRaises(pc.JobIdError) as cm:  # read already: no longer in flight
            self.c.wait("dup")
        self.assertEqual(cm.exception.name, "NotFound")

    def test_bad_job_ids_refused_before_sending(self):
        bad = ["x" * 300, "x" * (pc.MAX_JOB_ID_BYTES + 1), "\u00e9" * 65, "a\x00b", "a\nb", "tab\tid",
               "del\x7f", "\ud800", b"bytes-id"]
        for jid in bad:
            t = time.monotonic()
            with self.assertRaises(pc.JobIdError, msg=repr(jid)) as cm:
                self.c.generate("hi", job_id=jid)
            self.assertLess(time.monotonic() - t, 1.0)
            self.assertIsInstance(cm.exception, ValueError)
            self.assertEqual(cm.exception.name, "InvalidArgument")
            with self.assertRaises(pc.JobIdError):
                self.c.cancel(jid)
        self.assertIn("300 bytes", str(self._err("x" * 300)))
        self.assertIn("control character", str(self._err("a\x00b")))
        self.assertTrue(self.d.idle(), "a refused job id reached the daemon")
        self.assertEqual(self.c._pending, {})
        with self.assertRaises(pc.JobIdError):
            pc.check_job_id("")
        # the longest ids the daemon takes, and non-ASCII text, are sent
        good = ["y" * pc.MAX_JOB_ID_BYTES, "\u00e9" * 64, "job-\u4e16\u754c-1", "spaces are fine ~"]
        for jid in good:
            self.assertEqual(pc.check_job_id(jid), jid)
            self.c.submit("generate", jid, text="hi")
            self.assertEqual(self.d.requests(1), [jid])
            self.d.result(jid, jid)
            self.assertEqual(self.c.wait(jid).text, jid)

    def _err(self, jid):
        try:
            pc.check_job_id(jid)
        except pc.JobIdError as e:
            return e
        self.fail("%r accepted" % jid)


class Keys(unittest.TestCase):
    def test_prefixctl_and_zcert_formats(self):
        pub, sec = pc.generate_keypair()
        with tempfile.TemporaryDirectory() as d:
            f1 = os.path.join(d, "k1")
            with open(f1, "w") as f:
                f.write('# prefixd CURVE key for tenant "acme"\npublic %s\nsecret %s\n' % (pub, sec))
            self.assertEqual(pc.load_client_keys(f1), (pub, sec))
            f2 = os.path.join(d, "k2")
            with open(f2, "w") as f:
                f.write('curve\n    public-key = "%s"\n    secret-key = "%s"\n' % (pub, sec))
            self.assertEqual(pc.load_client_keys(f2), (pub, sec))
            from prefixd_client.keys import resolve_server_key
            self.assertEqual(resolve_server_key(f1), pub)
            self.assertEqual(resolve_server_key(pub), pub)
            f3 = os.path.join(d, "k3")
            with open(f3, "w") as f:
                f.write("public %s\n" % pub)
            with self.assertRaises(ValueError):
                pc.load_client_keys(f3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
