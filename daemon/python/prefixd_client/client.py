# The prefixd client: one ZeroMQ DEALER socket (CURVE-authenticated, or the insecure development
# mode on ipc/loopback), many jobs in flight, replies routed to their job by job id. Blocking calls
# (generate/score/embed/health), a streaming iterator, and submit()/collect() for batches.
# Errors: PrefixdError for an Error reply; its subclasses PrefixdTimeout (no reply within `timeout`,
# also a TimeoutError) and JobIdError (a job id refused before sending, also a ValueError).
import os
import time
import uuid
from typing import Dict, Iterator, List, Optional, Set

import zmq

from .keys import load_client_keys, resolve_server_key
from . import _proto as P
from .wire import (Accepted, Chunk, Health, JobIdError, PrefixdError, PrefixdTimeout, Result, check_job_id,
                   decode_reply, encode_request)

_FINAL = (Result, Health, PrefixdError)  # the last reply a job gets


class Stream:
    """Iterates a streamed Generate job's chunks; `result` holds the final Result afterwards."""

    def __init__(self, client: "Client", job_id: str):
        self._client = client
        self.job_id = job_id
        self.result: Optional[Result] = None

    def __iter__(self) -> Iterator[Chunk]:
        while self.result is None:
            obj = self._client._next_for(self.job_id)
            if isinstance(obj, Chunk):
                yield obj
            elif isinstance(obj, Result):
                self.result = obj
            elif isinstance(obj, PrefixdError):
                raise obj

    @property
    def text(self) -> str:
        return self.result.text if self.result else ""


class Client:
    """Connects to prefixd.

    CURVE (production): pass `server_key` (the daemon's Z85 public key, or a file holding it) and either
    `client_key_file` (as written by `prefixctl tenant add`) or `public_key` + `secret_key`.
    Insecure development mode (daemon started with --insecure-dev, ipc/loopback only): pass
    `tenant` instead; the daemon then takes the tenant from the job.

    Job ids: 1-128 bytes of UTF-8 without control characters, and not one this Client has in
    flight (submitted, final reply not yet read); others raise JobIdError before anything is sent.
    A wait that gets no reply within `timeout` seconds raises PrefixdTimeout; the job stays in
    flight (wait() for it again to keep waiting).
    """

    def __init__(self, endpoint: str, *, server_key: Optional[str] = None,
                 client_key_file: Optional[str] = None, public_key: Optional[str] = None,
                 secret_key: Optional[str] = None, tenant: Optional[str] = None,
                 timeout: float = 120.0, context: Optional[zmq.Context] = None):
        self.endpoint = endpoint
        self.tenant = tenant
        self.timeout = timeout
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if server_key:
            if client_key_file:
                public_key, secret_key = load_client_keys(client_key_file)
            if not (public_key and secret_key):
                raise ValueError("CURVE needs client keys: client_key_file or public_key+secret_key")
            if isinstance(server_key, str):
                server_key = resolve_server_key(server_key).encode()
            self._sock.curve_serverkey = server_key
            self._sock.curve_publickey = public_key.encode() if isinstance(public_key, str) else public_key
            self._sock.curve_secretkey = secret_key.encode() if isinstance(secret_key, str) else secret_key
        self._sock.connect(endpoint)
        # Jobs in flight, in submission order: job id -> replies not read yet. A job leaves when its
        # final reply (Result, Health or Error) is read; replies for ids not here are dropped.
        self._pending: Dict[str, List[object]] = {}
        self._answered: Set[str] = set()   # in flight and some reply (Accepted, ...) has come
        self._finished: Set[str] = set()   # in flight and the final reply has come (not read yet)
        self._timed_out: Set[str] = set()  # a wait for it timed out and nobody waits again yet

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- low level -------------------------------------------------------------------------
    @staticmethod
    def new_job_id() -> str:
        return uuid.uuid4().hex

    def submit(self, kind: str, job_id: Optional[str] = None, **fields) -> str:
        """Sends one request without waiting; returns its job id. kind: generate|score|embed.
        Raises JobIdError, sending nothing, for a job id the daemon could not read back or one
        this Client already has in flight (the job in flight is unaffected)."""
        job_id = job_id or self.new_job_id()
        if self.tenant and kind in ("generate", "score", "embed"):
            fields.setdefault("tenant", self.tenant)
        return self._send(kind, job_id, **fields)

    def _send(self, kind: str, job_id: str, **fields) -> str:
        check_job_id(job_id)
        if job_id in self._pending:
            # The daemon would answer "Duplicate: still running" under the same id, and the first
            # job would take that error while its own Result was never read.
            raise JobIdError(P.ErrorCode.ErrorCode.Duplicate,
                             "job id is already in flight on this client (wait for it, or use another id)",
                             job_id)
        self._sock.send(encode_request(kind, job_id, **fields))
        self._pending[job_id] = []
        return job_id

    def _owner_of_unaddressed(self, obj) -> Optional[str]:
        """The job an Error without a job id belongs to, or None. The daemon sends such an Error for
        a request it could not read the job id of (a frame over its size limit, too many frames, a
        malformed buffer; bad job ids are refused here before sending). With one job in flight it is
        that job's. With several the reply cannot say which, so it goes to the oldest job still
        waiting for its first reply (Accepted): the daemon answers an unreadable request at once, so
        a job it already read has usually been accepted. Jobs whose wait timed out come last (they
        are more likely lost than unread). Best effort: never filed under "" to wait there forever."""
        if not isinstance(obj, PrefixdError):
            return None
        live = [j for j in self._pending if j not in self._finished]
        if len(live) == 1:
            return live[0]
        waiting = [j for j in live if j not in self._answered]
        waiting.sort(key=lambda j: j in self._timed_out)  # stable: submission order otherwise
        return waiting[0] if waiting else None

    def _recv_one(self, job_id: str, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._sock.poll(max(1, int(remaining * 1000))):
            self._timed_out.add(job_id)
            raise PrefixdTimeout(job_id, self.timeout, self.endpoint)
        frames = self._sock.recv_multipart()
        rid, obj = decode_reply(frames[-1])  # an empty delimiter frame may precede the envelope
        if not rid:
            rid = self._owner_of_unaddressed(obj)
            if rid is None:
                return
            obj.job_id = rid
            obj.args = ("%s: %s (job %s; the daemon could not read the request's job id)"
                        % (obj.name, obj.message, rid),)
        queue = self._pending.get(rid)
        if queue is None:  # no job of ours: e.g. NotFound for cancelling a job that already ended
            return
        queue.append(obj)
        self._answered.add(rid)
        if isinstance(obj, _FINAL):
            self._finished.add(rid)

    def _next_for(self, job_id: str, skip_accepted: bool = True):
        """Next reply object for job_id (Chunk, Result, Health or PrefixdError)."""
        if job_id not in self._pending:
            raise JobIdError(P.ErrorCode.ErrorCode.NotFound,
                             "job id is not in flight on this client (never submitted, or its final "
                             "reply was already read)", job_id)
        self._timed_out.discard(job_id)
        deadline = time.monotonic() + self.timeout
        while True:
            queue = self._pending[job_id]
            while queue:
                obj = queue.pop(0)
                if skip_accepted and isinstance(obj, Accepted):
                    continue
                if isinstance(obj, _FINAL):
                    self._forget(job_id)
                return obj
            self._recv_one(job_id, deadline)

    def _forget(self, job_id: str) -> None:
        self._pending.pop(job_id, None)
        self._answered.discard(job_id)
        self._finished.discard(job_id)
        self._timed_out.discard(job_id)

    def wait(self, job_id: str) -> Result:
        """Blocks until job_id ends; returns its Result (streamed chunks are dropped). Raises
        PrefixdError for the job's Error reply, PrefixdTimeout when no reply comes within `timeout`
        seconds (the job stays in flight: wait again to keep waiting), JobIdError when job_id is
        not in flight on this Client."""
        while True:
            obj = self._next_for(job_id)
            if isinstance(obj, PrefixdError):
                raise obj
            if isinstance(obj, (Result, Health)):
                return obj

    def collect(self, job_ids: List[str], raise_errors: bool = True) -> List[object]:
        """Waits for all job_ids (in flight together); returns Results (or errors) in order."""
        out = []
        for jid in job_ids:
            try:
                out.append(self.wait(jid))
            except PrefixdError as e:
                if raise_errors:
                    raise
                out.append(e)
        return out

    # -- requests --------------------------------------------------------------------------
    def generate(self, text: Optional[str] = None, *, job_id: Optional[str] = None, **fields) -> Result:
        """Generate. Fields: token_ids, adapter, embeddings (np [n, hidden]), max_tokens,
        temperature, top_p, top_k, seed (default: drawn by the daemon when sampling; Result.seed),
        stop, choices, top_logprobs."""
        return self.wait(self.submit("generate", job_id, text=text, **fields))

    def stream(self, text: Optional[str] = None, *, job_id: Optional[str] = None, **fields) -> Stream:
        """Streamed Generate: iterate the returned object for Chunks; .result at the end."""
        return Stream(self, self.submit("generate", job_id, text=text, stream=True, **fields))

    def classify(self, text: str, choices: List[str], **fields) -> Result:
        """Generate constrained to one of `choices`; Result.choices maps label -> probability."""
        return self.generate(text, choices=choices, **fields)

    def score(self, text: Optional[str], continuation: str, *, job_id: Optional[str] = None,
              **fields) -> Result:
        """Log-probabilities of `continuation` after the prompt: Result.logprobs, .logprob_sum."""
        return self.wait(self.submit("score", job_id, text=text, continuation=continuation, **fields))

    def embed(self, text: Optional[str] = None, *, job_id: Optional[str] = None, **fields):
        """The model's input embeddings of the text (with BOS): np.ndarray [n, hidden] float32."""
        return self.wait(self.submit("embed", job_id, text=text, **fields)).embeddings

    def cancel(self, job_id: str) -> None:
        """Asks the daemon to cancel job_id; its final reply still arrives (finish 'cancelled')."""
        check_job_id(job_id)
        # the tenant as for submit(): an insecure-dev daemon looks the job up under it
        self._sock.send(encode_request("cancel", job_id, **({"tenant": self.tenant} if self.tenant else {})))

    def health(self) -> Health:
        return self.wait(self._send("health", self.new_job_id()))


def from_env(**kw) -> Client:
    """A Client from PREFIXD_ENDPOINT, PREFIXD_SERVER_KEY, PREFIXD_CLIENT_KEY_FILE, PREFIXD_TENANT."""
    env = os.environ
    return Client(kw.pop("endpoint", env.get("PREFIXD_ENDPOINT", "ipc:///run/prefixd/prefixd.sock")),
                  server_key=kw.pop("server_key", env.get("PREFIXD_SERVER_KEY")),
                  client_key_file=kw.pop("client_key_file", env.get("PREFIXD_CLIENT_KEY_FILE")),
                  tenant=kw.pop("tenant", env.get("PREFIXD_TENANT")), **kw)
