#!/usr/bin/python3
# Routing documents to per-task enterprise adapters: a router classifies each document into a
# task with a `choices` request, then the document is processed with that task's adapter. With
# --db the example first creates one adapter per task (seeded from Embed of the task instruction).
import os
import subprocess
import tempfile

import numpy as np

from _common import connect, parser

TASKS = {
    "invoice": "Extract the invoice number, the total amount and the due date.",
    "contract": "List the parties and the termination clause of this contract.",
    "support": "Write a short, polite reply to this customer message.",
}
DOCS = [
    "INVOICE #4471. Total due: EUR 1,250.00 by 2026-03-01. Payment to IBAN DE44 ...",
    "This Agreement is made between Acme GmbH and Beta Ltd. Either party may terminate with 90 days notice.",
    "Hi, my order arrived broken and nobody answers the phone. What now?",
    "Rechnung Nr. 88-12, Betrag 310,00 EUR, zahlbar bis 15.04.",
]


def create_adapters(args, client):
    with tempfile.TemporaryDirectory() as d:
        for task, instruction in TASKS.items():
            rows = client.embed(instruction)[1:]          # drop the BOS row: PEFT order adds BOS later
            path = os.path.join(d, task + ".npy")
            np.save(path, rows.astype(np.float32))
            cmd = [args.prefixctl, "--db", args.db, "adapter", "add", "task-" + task, "--file", path,
                   "--description", instruction]
            if args.tenant_name:
                cmd[5:5] = ["--tenant", args.tenant_name]
            print("+", " ".join(cmd))
            subprocess.run(cmd, check=True)


def main():
    p = parser("Route documents to per-task adapters")
    p.add_argument("--db", help="create the task adapters first with prefixctl (admin)")
    p.add_argument("--tenant-name", help="tenant owning the adapters (prefixctl --tenant)")
    p.add_argument("--prefixctl", default=os.environ.get("PREFIXCTL", "prefixctl"))
    p.add_argument("-n", "--max-tokens", type=int, default=24)
    args = p.parse_args()
    with connect(args) as c:
        if args.db:
            create_adapters(args, c)
        labels = list(TASKS)
        # Route all documents at once (jobs in flight together are batched by the daemon).
        ids = [c.submit("generate", text="Document: %s\nDocument type:" % doc, choices=labels) for doc in DOCS]
        routes = c.collect(ids)
        work = [c.submit("generate", text=doc, adapter="task-" + max(r.choices, key=r.choices.get),
                         max_tokens=args.max_tokens) for doc, r in zip(DOCS, routes)]
        for doc, r, out in zip(DOCS, routes, c.collect(work, raise_errors=False)):
            task = max(r.choices, key=r.choices.get)
            print("\n%s...\n  -> %s (p=%.2f)" % (doc[:60], task, r.choices[task]))
            print("  %s" % (("output: %r  usage %s" % (out.text, out.usage)) if hasattr(out, "text")
                            else "error: %s" % out))


if __name__ == "__main__":
    main()
