# Encoding of prefixd requests and decoding of its replies (FlatBuffers, file identifier "PFXD").
# Requests are built with the flatc-generated builders; replies become plain Python objects
# (dataclasses, numpy arrays) so callers never touch FlatBuffers tables.
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import flatbuffers
import numpy as np

from . import _proto as P

FILE_IDENTIFIER = b"PFXD"

ERROR_NAMES = {v: k for k, v in vars(P.ErrorCode.ErrorCode).items() if not k.startswith("_")}
FINISH_NAMES = {v: k.lower() for k, v in vars(P.FinishReason.FinishReason).items()
                if not k.startswith("_")}


@dataclass
class Usage:
    virtual_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass
class TokenLogprob:
    id: int
    logprob: float
    top: List[tuple] = field(default_factory=list)  # [(id, logprob)] best first


@dataclass
class Result:
    job_id: str
    text: str = ""
    token_ids: List[int] = field(default_factory=list)
    finish: str = "none"
    usage: Usage = field(default_factory=Usage)
    choices: Dict[str, float] = field(default_factory=dict)        # label -> probability
    choice_logprobs: Dict[str, float] = field(default_factory=dict)
    logprobs: Optional[np.ndarray] = None                          # Score: per continuation token
    logprob_sum: float = 0.0
    embeddings: Optional[np.ndarray] = None                        # Embed: [n, hidden] float32
    tokens: List[TokenLogprob] = field(default_factory=list)       # Generate with top_logprobs
    replayed: bool = False
    seed: Optional[int] = None  # Generate with temperature > 0: the seed it sampled with (send it back
                                # as seed= to get the same tokens again)


@dataclass
class Chunk:
    job_id: str
    index: int
    token_ids: List[int]
    text: str


@dataclass
class Accepted:
    job_id: str
    queue_position: int


@dataclass
class Health:
    status: str
    model: str
    backend: str
    queued: int
    running: int
    n_vocab: int
    hidden: int
    n_ctx: int


class PrefixdError(Exception):
    """An Error reply from the daemon (stable `code`, `name`), or a client-side failure: the
    subclasses PrefixdTimeout (no reply in time) and JobIdError (a job id refused before sending)."""

    def __init__(self, code: int, message: str, job_id: str = "", retriable: bool = False,
                 retry_after_ms: int = 0, name: Optional[str] = None):
        self.code = code
        self.name = name or ERROR_NAMES.get(code, "Code%d" % code)
        self.message = message
        self.job_id = job_id
        self.retriable = retriable
        self.retry_after_ms = retry_after_ms  # when a retry can succeed, if the daemon knows (0 = unknown)
        self.replayed = False  # an Error answering a duplicate job id: the stored outcome, final
        super().__init__("%s: %s (job %s)" % (self.name, message, job_id))


class PrefixdTimeout(PrefixdError, TimeoutError):
    """The client waited `timeout` seconds for a reply to `job_id` and none came (the daemon is down,
    unreachable, refused the CURVE handshake, or is still busy with the job). Not a daemon error:
    `code` is -1 and `name` "Timeout". The job stays in flight on its Client: wait() for it again
    to keep waiting."""

    def __init__(self, job_id: str, timeout: float, endpoint: str = ""):
        self.timeout = timeout
        self.endpoint = endpoint
        where = " from %s" % endpoint if endpoint else ""
        super().__init__(-1, "no reply for job %r within %gs%s" % (job_id, timeout, where), job_id,
                         name="Timeout")
        self.args = ("%s: %s" % (self.name, self.message),)


class JobIdError(PrefixdError, ValueError):
    """A job id refused by the client before anything is sent: not a str of 1-MAX_JOB_ID_BYTES
    bytes of UTF-8, holding an ASCII control character (code InvalidArgument), or already in
    flight on this Client (code Duplicate; that job is unaffected)."""

    def __init__(self, code: int, message: str, job_id=""):
        shown = job_id if isinstance(job_id, str) else repr(job_id)
        shown = repr(shown[:40] + "..." if len(shown) > 40 else shown)
        super().__init__(code, "%s (job id %s)" % (message, shown),
                         job_id if isinstance(job_id, str) else "")
        self.args = ("%s: %s" % (self.name, self.message),)


MAX_JOB_ID_BYTES = 128  # the daemon's limit (daemon/message.h, Limits::max_job_id)


def check_job_id(job_id) -> str:
    """Returns job_id if the daemon can read it back: a str of 1-MAX_JOB_ID_BYTES bytes of UTF-8
    without ASCII control characters (0x00-0x1F, 0x7F). Raises JobIdError otherwise: a job id the
    daemon cannot read comes back as an Error without a job id, which no job can claim for sure."""
    IA = P.ErrorCode.ErrorCode.InvalidArgument
    if not isinstance(job_id, str):
        raise JobIdError(IA, "job id must be a str, not %s" % type(job_id).__name__, job_id)
    try:
        n = len(job_id.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        raise JobIdError(IA, "job id is not valid UTF-8", job_id) from None
    if n == 0:
        raise JobIdError(IA, "job id is empty", job_id)
    if n > MAX_JOB_ID_BYTES:
        raise JobIdError(IA, "job id is %d bytes of UTF-8; the daemon takes at most %d"
                         % (n, MAX_JOB_ID_BYTES), job_id)
    bad = next((ch for ch in job_id if ord(ch) < 0x20 or ord(ch) == 0x7F), None)
    if bad is not None:
        raise JobIdError(IA, "job id contains the control character %r" % bad, job_id)
    return job_id


def _s(b) -> str:
    return b.decode("utf-8", "replace") if b is not None else ""


def _embeddings_tensor(builder, emb):
    """Serialises a [rows, hidden] float32/float16 array as a little-endian Tensor table."""
    arr = np.asarray(emb)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError("embeddings must be a [rows, hidden] array, got shape %s" % (arr.shape,))
    if arr.dtype == np.float16:
        dtype, arr = P.DType.DType.F16, np.ascontiguousarray(arr, dtype="<f2")
    else:
        dtype, arr = P.DType.DType.F32, np.ascontiguousarray(arr, dtype="<f4")
    data = builder.CreateByteVector(arr.tobytes())
    P.Tensor.Start(builder)
    P.Tensor.AddRows(builder, arr.shape[0])
    P.Tensor.AddCols(builder, arr.shape[1])
    P.Tensor.AddDtype(builder, dtype)
    P.Tensor.AddData(builder, data)
    return P.Tensor.End(builder)


def _string_vector(builder, start_fn, items: Sequence[str]):
    offs = [builder.CreateString(s) for s in items]
    start_fn(builder, len(offs))
    for o in reversed(offs):
        builder.PrependUOffsetTRelative(o)
    return builder.EndVector()


def _int_vector(builder, start_fn, items: Sequence[int]):
    start_fn(builder, len(items))
    for v in reversed(list(items)):
        builder.PrependInt32(int(v))
    return builder.EndVector()


def _job(builder, *, text=None, token_ids=None, adapter=None, embeddings=None, max_tokens=16,
         temperature=0.0, top_p=1.0, top_k=0, seed=None, stop=None, stream=False, choices=None,
         top_logprobs=0, tenant=None):
    # Children first: FlatBuffers builds bottom-up.
    adapter_o = builder.CreateString(adapter) if adapter else None
    emb_o = _embeddings_tensor(builder, embeddings) if embeddings is not None else None
    text_o = builder.CreateString(text) if text is not None else None
    ids_o = _int_vector(builder, P.Job.StartTokenIdsVector, token_ids) if token_ids is not None else None
    choices_o = _string_vector(builder, P.Job.StartChoicesVector, choices) if choices else None
    tenant_o = builder.CreateString(tenant) if tenant else None
    stop_o = _string_vector(builder, P.Sampling.StartStopVector, stop) if stop else None
    P.Sampling.Start(builder)
    P.Sampling.AddMaxTokens(builder, int(max_tokens))
    P.Sampling.AddTemperature(builder, float(temperature))
    P.Sampling.AddTopP(builder, float(top_p))
    P.Sampling.AddTopK(builder, int(top_k))
    if seed is not None:  # absent: the daemon draws one for a sampled job (Result.seed)
        P.Sampling.AddSeed(builder, int(seed))
    if stop_o is not None:
        P.Sampling.AddStop(builder, stop_o)
    sampling_o = P.Sampling.End(builder)
    P.Job.Start(builder)
    if adapter_o is not None:
        P.Job.AddAdapter(builder, adapter_o)
    if emb_o is not None:
        P.Job.AddEmbeddings(builder, emb_o)
    if text_o is not None:
        P.Job.AddText(builder, text_o)
    if ids_o is not None:
        P.Job.AddTokenIds(builder, ids_o)
    P.Job.AddSampling(builder, sampling_o)
    P.Job.AddStream(builder, bool(stream))
    if choices_o is not None:
        P.Job.AddChoices(builder, choices_o)
    P.Job.AddTopLogprobs(builder, int(top_logprobs))
    if tenant_o is not None:
        P.Job.AddTenant(builder, tenant_o)
    return P.Job.End(builder)


def _envelope(builder, job_id: str, ptype: int, payload) -> bytes:
    jid = builder.CreateString(job_id)
    P.Envelope.Start(builder)
    P.Envelope.AddJobId(builder, jid)
    P.Envelope.AddPayloadType(builder, ptype)
    if payload is not None:
        P.Envelope.AddPayload(builder, payload)
    env = P.Envelope.End(builder)
    builder.Finish(env, file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def encode_request(kind: str, job_id: str, continuation=None, continuation_ids=None, **job) -> bytes:
    """kind: generate | score | embed | cancel | health; `job` holds the Job fields."""
    b = flatbuffers.Builder(1024)
    if kind == "cancel":  # job may hold tenant= (insecure-dev daemons take it from the message)
        tenant_o = b.CreateString(job["tenant"]) if job.get("tenant") else None
        P.Cancel.Start(b)
        if tenant_o is not None:
            P.Cancel.AddTenant(b, tenant_o)
        return _envelope(b, job_id, P.Payload.Payload.Cancel, P.Cancel.End(b))
    if kind == "health":
        P.Health.Start(b)
        return _envelope(b, job_id, P.Payload.Payload.Health, P.Health.End(b))
    job_o = _job(b, **job)
    if kind == "generate":
        P.Generate.Start(b)
        P.Generate.AddJob(b, job_o)
        return _envelope(b, job_id, P.Payload.Payload.Generate, P.Generate.End(b))
    if kind == "embed":
        P.Embed.Start(b)
        P.Embed.AddJob(b, job_o)
        return _envelope(b, job_id, P.Payload.Payload.Embed, P.Embed.End(b))
    if kind == "score":
        cont_o = b.CreateString(continuation) if continuation is not None else None
        cids_o = (_int_vector(b, P.Score.StartContinuationIdsVector, continuation_ids)
                  if continuation_ids is not None else None)
        P.Score.Start(b)
        P.Score.AddJob(b, job_o)
        if cont_o is not None:
            P.Score.AddContinuation(b, cont_o)
        if cids_o is not None:
            P.Score.AddContinuationIds(b, cids_o)
        return _envelope(b, job_id, P.Payload.Payload.Score, P.Score.End(b))
    raise ValueError("unknown request kind %r" % kind)


def _tensor_to_numpy(t) -> np.ndarray:
    rows, cols = t.Rows(), t.Cols()
    dt = "<f2" if t.Dtype() == P.DType.DType.F16 else "<f4"
    raw = t.DataAsNumpy()
    raw = raw.tobytes() if isinstance(raw, np.ndarray) else b""
    if len(raw) != rows * cols * np.dtype(dt).itemsize:
        raise PrefixdError(P.ErrorCode.ErrorCode.Malformed, "embeddings byte length does not match shape")
    return np.frombuffer(raw, dtype=dt).reshape(rows, cols).astype(np.float32)


def _decode_result(job_id: str, r) -> Result:
    u = r.Usage()
    out = Result(job_id=job_id, text=_s(r.Text()),
                 token_ids=[r.TokenIds(i) for i in range(r.TokenIdsLength())],
                 finish=FINISH_NAMES.get(r.Finish(), str(r.Finish())),
                 logprob_sum=r.LogprobSum(), replayed=bool(r.Replayed()),
                 seed=r.Seed() if hasattr(r, "Seed") else None)  # (an older generated module lacks it)
    if u is not None:
        out.usage = Usage(u.VirtualTokens(), u.PromptTokens(), u.CompletionTokens(), u.TotalTokens())
    for i in range(r.ChoicesLength()):
        c = r.Choices(i)
        out.choices[_s(c.Label())] = c.Prob()
        out.choice_logprobs[_s(c.Label())] = c.Logprob()
    if not r.LogprobsIsNone():
        out.logprobs = np.array([r.Logprobs(i) for i in range(r.LogprobsLength())], dtype=np.float32)
    if r.Embeddings() is not None:
        out.embeddings = _tensor_to_numpy(r.Embeddings())
    for i in range(r.TokensLength()):
        t = r.Tokens(i)
        top = [(t.Top(k).Id(), t.Top(k).Logprob()) for k in range(t.TopLength())]
        out.tokens.append(TokenLogprob(t.Id(), t.Logprob(), top))
    return out


def decode_reply(buf: bytes):
    """Returns (job_id, object) with object one of Accepted, Chunk, Result, Health, PrefixdError.
    A buffer that is not a well-formed reply raises PrefixdError(Malformed)."""
    try:
        return _decode_reply(buf)
    except PrefixdError:
        raise
    except Exception as e:  # Python's FlatBuffers readers do not verify: bad offsets land here
        raise PrefixdError(P.ErrorCode.ErrorCode.Malformed, "undecodable reply: %s" % e)


def _decode_reply(buf: bytes):
    if len(buf) < 8 or not P.Envelope.Envelope.EnvelopeBufferHasIdentifier(buf, 0):
        raise PrefixdError(P.ErrorCode.ErrorCode.Malformed, "reply is not a prefixd envelope")
    env = P.Envelope.Envelope.GetRootAs(buf, 0)
    job_id = _s(env.JobId())
    ptype, tab = env.PayloadType(), env.Payload()
    T = P.Payload.Payload
    if tab is None:
        raise PrefixdError(P.ErrorCode.ErrorCode.Malformed, "reply without payload", job_id)
    if ptype == T.Accepted:
        a = P.Accepted.Accepted()
        a.Init(tab.Bytes, tab.Pos)
        return job_id, Accepted(job_id, a.QueuePosition())
    if ptype == T.TokenChunk:
        c = P.TokenChunk.TokenChunk()
        c.Init(tab.Bytes, tab.Pos)
        return job_id, Chunk(job_id, c.Index(), [c.TokenIds(i) for i in range(c.TokenIdsLength())],
                             _s(c.Text()))
    if ptype == T.Result:
        r = P.Result.Result()
        r.Init(tab.Bytes, tab.Pos)
        return job_id, _decode_result(job_id, r)
    if ptype == T.Error:
        e = P.Error.Error()
        e.Init(tab.Bytes, tab.Pos)
        err = PrefixdError(e.Code(), _s(e.Message()), job_id, bool(e.Retriable()), int(e.RetryAfterMs()))
        # the stored outcome of a job id that already ended with this error (after billed work)
        err.replayed = bool(e.Replayed())
        return job_id, err
    if ptype == T.HealthStatus:
        h = P.HealthStatus.HealthStatus()
        h.Init(tab.Bytes, tab.Pos)
        return job_id, Health(_s(h.Status()), _s(h.Model()), _s(h.Backend()), h.Queued(), h.Running(),
                              h.NVocab(), h.Hidden(), h.NCtx())
    raise PrefixdError(P.ErrorCode.ErrorCode.Unsupported, "unexpected reply payload type %d" % ptype, job_id)
