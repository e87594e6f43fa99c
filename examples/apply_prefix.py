#!/usr/bin/python3
# Applying a learned prefix at inference, two ways: sent with each job as raw embedding rows, or
# registered once as an adapter (prefixctl adapter add) and named by jobs. With greedy sampling
# both give the same tokens, since adapter rows enter the model exactly like raw embeddings.
import os
import subprocess
import sys

import numpy as np

from _common import connect, parser

TEXTS = ["Message: The courier left my box at the wrong house\nIntent:",
         "Message: I see two identical charges on my card\nIntent:"]


def main():
    p = parser("Apply a learned prefix as raw embeddings and as a registered adapter")
    p.add_argument("--prefix", default="ptuned_prefix.npy", help=".npy [rows, hidden] (ptune_classifier.py)")
    p.add_argument("--adapter", default="ptuned-intents", help="adapter name to register/use")
    p.add_argument("--db", help="SQLite store: register the adapter with prefixctl (admin, group prefixd)")
    p.add_argument("--tenant-name", help="tenant owning the adapter (prefixctl --tenant)")
    p.add_argument("--prefixctl", default=os.environ.get("PREFIXCTL", "prefixctl"))
    p.add_argument("-n", "--max-tokens", type=int, default=8)
    args = p.parse_args()
    prefix = np.load(args.prefix).astype(np.float32)
    if args.db:
        cmd = [args.prefixctl, "--db", args.db, "adapter", "add", args.adapter, "--file", args.prefix,
               "--description", "P-tuned intent prefix"]
        if args.tenant_name:
            cmd[5:5] = ["--tenant", args.tenant_name]
        print("+", " ".join(cmd))
        subprocess.run(cmd, check=True)
    with connect(args) as c:
        for text in TEXTS:
            raw = c.generate(text, embeddings=prefix, max_tokens=args.max_tokens)
            print("raw embeddings: %r  usage %s" % (raw.text, raw.usage))
            if args.db:
                ad = c.generate(text, adapter=args.adapter, max_tokens=args.max_tokens)
                print("adapter       : %r  usage %s" % (ad.text, ad.usage))
                if ad.token_ids != raw.token_ids:
                    sys.exit("adapter and raw-embedding results differ: %s vs %s" % (ad.token_ids, raw.token_ids))
            r = c.classify(text, ["billing", "shipping", "returns"], embeddings=prefix)
            print("classification: %s" % {k: round(v, 3) for k, v in r.choices.items()})


if __name__ == "__main__":
    main()
