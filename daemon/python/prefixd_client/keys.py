# CURVE key handling for the prefixd client: reads a tenant's client key file (as written by
# `prefixctl tenant add`, ZeroMQ zcert style, JSON, or KEY=VALUE lines) and makes keypairs.
import json
import os
import re
from typing import Tuple

import zmq

_Z85_KEY = r"[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}"


def generate_keypair() -> Tuple[str, str]:
    """A fresh CURVE keypair as Z85 strings (public, secret)."""
    pub, sec = zmq.curve_keypair()
    return pub.decode(), sec.decode()


def load_client_keys(path: str) -> Tuple[str, str]:
    """(public, secret) Z85 keys from a key file; raises ValueError naming the file if absent."""
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    pub = sec = None
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            pub = obj.get("public_key") or obj.get("public") or obj.get("client_public_key")
            sec = obj.get("secret_key") or obj.get("secret") or obj.get("client_secret_key")
    except ValueError:
        pass
    if not (pub and sec):
        # prefixctl's format: "public <z85>" / "secret <z85>" lines, '#' comment lines.
        # Also accepted: zcert's `public-key = "<z85>"`. (Z85 itself contains '#', ':' and '='.)
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([A-Za-z_\-]+)\s*(?:=\s*)?\"?(" + _Z85_KEY + r")\"?$", line)
            if not m:
                continue
            label = m.group(1).lower()
            if label.startswith("secret"):
                sec = m.group(2)
            elif label.startswith("public"):
                pub = m.group(2)
    if not (pub and sec):
        raise ValueError("%s: no CURVE public and secret key found (expected public-key/secret-key)" % path)
    return pub, sec


def resolve_server_key(value: str) -> str:
    """The daemon's public key: a Z85 key as is, or read from a key file's `public` line
    (e.g. the --public-out file of `prefixctl server-key generate`)."""
    if len(value) == 40 and not os.path.isfile(value):
        return value
    with open(value, "r", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[0].lower().startswith("public") and re.fullmatch(_Z85_KEY, parts[1]):
                return parts[1]
    raise ValueError("%s: no 'public <z85>' line (expected a prefixd server key file)" % value)
