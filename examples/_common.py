# Shared command-line handling for the prefixd examples: how to reach the daemon (endpoint, CURVE
# keys or the insecure dev tenant) and how to find the client module in a source checkout.
import argparse
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_src_client = os.path.join(_here, "..", "daemon", "python")
if os.path.isdir(_src_client):  # running from a checkout; installed: prefixd_client is in dist-packages
    sys.path.insert(0, _src_client)

from prefixd_client import Client  # noqa: E402


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--endpoint", default=os.environ.get("PREFIXD_ENDPOINT", "ipc:///run/prefixd/prefixd.sock"))
    p.add_argument("--server-key", default=os.environ.get("PREFIXD_SERVER_KEY"),
                   help="daemon's CURVE public key (Z85)")
    p.add_argument("--client-key-file", default=os.environ.get("PREFIXD_CLIENT_KEY_FILE"),
                   help="tenant key file from `prefixctl tenant add`")
    p.add_argument("--tenant", default=os.environ.get("PREFIXD_TENANT"),
                   help="tenant name in the daemon's insecure dev mode (instead of keys)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a reply")
    return p


def connect(args) -> Client:
    if not args.server_key and not args.tenant:
        sys.exit("give --server-key and --client-key-file (CURVE), or --tenant (insecure dev mode)")
    return Client(args.endpoint, server_key=args.server_key, client_key_file=args.client_key_file,
                  tenant=None if args.server_key else args.tenant, timeout=args.timeout)
