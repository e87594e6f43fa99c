# Locates and imports the flatc-generated Python module `prefixd.proto` (from schema/prefixd.fbs).
# Installed: it sits beside prefixd_client in dist-packages. In a source checkout it lives in
# <build>/generated/python; we look there ($PREFIXD_BUILD_DIR, then the repo's build/).
import os
import sys


def _candidates():
    env = os.environ.get("PREFIXD_PYTHON_GENERATED")
    if env:
        yield env
    bdir = os.environ.get("PREFIXD_BUILD_DIR")
    if bdir:
        yield os.path.join(bdir, "generated", "python")
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.normpath(os.path.join(here, "..", "..", ".."))
    yield os.path.join(repo, "build", "generated", "python")


def _import():
    try:
        import prefixd.proto  # noqa: F401  (installed package, or already on sys.path)
        return
    except ImportError:
        pass
    for path in _candidates():
        if os.path.isfile(os.path.join(path, "prefixd", "proto", "Envelope.py")):
            sys.path.insert(0, path)
            import prefixd.proto  # noqa: F401
            return
    raise ImportError(
        "prefixd_client: the generated FlatBuffers module 'prefixd.proto' was not found; build the "
        "project (tools/build.sh) or set PREFIXD_BUILD_DIR / PREFIXD_PYTHON_GENERATED")


_import()

from prefixd.proto import (  # noqa: E402
    Cancel, ChoiceProb, DType, Embed, Envelope, Error, ErrorCode, FinishReason, Generate, Health,
    HealthStatus, Job, Payload, Result, Sampling, Score, Tensor, TokenChunk, TokenLogprob, TopLogprob,
    Accepted, Usage)

__all__ = [
    "Accepted", "Cancel", "ChoiceProb", "DType", "Embed", "Envelope", "Error", "ErrorCode",
    "FinishReason", "Generate", "Health", "HealthStatus", "Job", "Payload", "Result", "Sampling",
    "Score", "Tensor", "TokenChunk", "TokenLogprob", "TopLogprob", "Usage",
]
