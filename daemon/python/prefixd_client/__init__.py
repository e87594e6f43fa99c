# prefixd_client — Python client for the prefixd inference daemon (ZeroMQ + FlatBuffers).
# Generate / Score / Embed / Cancel / Health with numpy embeddings, streaming, CURVE keys.
#   from prefixd_client import Client
#   with Client("ipc:///run/prefixd/prefixd.sock", server_key=K, client_key_file=F) as c:
#       print(c.generate("Hello", adapter="support-intents", max_tokens=16).text)
from .client import Client, Stream, from_env
from .keys import generate_keypair, load_client_keys
from .wire import (MAX_JOB_ID_BYTES, Accepted, Chunk, Health, JobIdError, PrefixdError, PrefixdTimeout,
                   Result, TokenLogprob, Usage, check_job_id, decode_reply, encode_request)

__version__ = "0.1.0"

__all__ = [
    "MAX_JOB_ID_BYTES", "Accepted", "Chunk", "Client", "Health", "JobIdError", "PrefixdError",
    "PrefixdTimeout", "Result", "Stream", "TokenLogprob", "Usage", "check_job_id", "decode_reply",
    "encode_request", "from_env", "generate_keypair", "load_client_keys",
]
