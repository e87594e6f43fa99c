# The prefixd client: one ZeroMQ DEALER socket (CURVE-authenticated, or the insecure development
# mode on ipc/loopback), many jobs in flight, replies routed to their job by job id. Blocking calls
# (generate/score/embed/health), a streaming iterator, and submit()/collect() for batches.
import os
import time
import uuid
from typing import Dict, Iterator, List, Optional

import zmq

from .keys import load_client_keys, resolve_server_key
from .wire import Accepted, Chunk, Health, PrefixdError, Result, decode_reply, encode_request

_TIMEOUT_CODE = 0  # ErrorCode.Internal: used for client-side timeouts


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
        self._pending: Dict[str, List[object]] = {}

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
        """Sends one request without waiting; returns its job id. kind: generate|score|embed."""
        job_id = job_id or self.new_job_id()
        if self.tenant and kind in ("generate", "score", "embed"):
            fields.setdefault("tenant", self.tenant)
        self._sock.send(encode_request(kind, job_id, **fields))
        self._pending.setdefault(job_id, [])
        return job_id

    def _recv_one(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._sock.poll(int(remaining * 1000)):
            raise PrefixdError(_TIMEOUT_CODE, "no reply from %s within %.0fs" % (self.endpoint, self.timeout))
        frames = self._sock.recv_multipart()
        job_id, obj = decode_reply(frames[-1])  # an empty delimiter frame may precede the envelope
        self._pending.setdefault(job_id, []).append(obj)

    def _next_for(self, job_id: str, skip_accepted: bool = True):
        """Next reply object for job_id (Chunk, Result, Health or PrefixdError)."""
        deadline = time.monotonic() + self.timeout
        while True:
            queue = self._pending.get(job_id)
            while queue:
                obj = queue.pop(0)
                if skip_accepted and isinstance(obj, Accepted):
                    continue
                if isinstance(obj, (Result, Health, PrefixdError)):
                    self._pending.pop(job_id, None)
                return obj
            self._recv_one(deadline)

    def wait(self, job_id: str) -> Result:
        """Blocks until job_id ends; returns its Result (streamed chunks are dropped)."""
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
        temperature, top_p, top_k, seed, stop, choices, top_logprobs."""
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
        # the tenant as for submit(): an insecure-dev daemon looks the job up under it
        self._sock.send(encode_request("cancel", job_id, **({"tenant": self.tenant} if self.tenant else {})))

    def health(self) -> Health:
        jid = self.new_job_id()
        self._sock.send(encode_request("health", jid))
        self._pending.setdefault(jid, [])
        return self.wait(jid)


def from_env(**kw) -> Client:
    """A Client from PREFIXD_ENDPOINT, PREFIXD_SERVER_KEY, PREFIXD_CLIENT_KEY_FILE, PREFIXD_TENANT."""
    env = os.environ
    return Client(kw.pop("endpoint", env.get("PREFIXD_ENDPOINT", "ipc:///run/prefixd/prefixd.sock")),
                  server_key=kw.pop("server_key", env.get("PREFIXD_SERVER_KEY")),
                  client_key_file=kw.pop("client_key_file", env.get("PREFIXD_CLIENT_KEY_FILE")),
                  tenant=kw.pop("tenant", env.get("PREFIXD_TENANT")), **kw)
