#!/usr/bin/python3
# P-tuning a classifier prompt through the daemon, no gradients and no GPU on the client: a few
# virtual-token rows (seeded from Embed of an instruction) are optimised with SPSA so that Score
# requests give the right label the highest log-probability. Saves the learned prefix as .npy.
import numpy as np

from _common import connect, parser

TRAIN = [
    ("I was charged twice for the same order", "billing"),
    ("Why is there an extra fee on my invoice?", "billing"),
    ("Please refund the duplicate payment", "billing"),
    ("My parcel has not arrived after two weeks", "shipping"),
    ("The tracking number does not work", "shipping"),
    ("Can you deliver to a different address?", "shipping"),
    ("The shoes are too small, I want to send them back", "returns"),
    ("How do I return a damaged item?", "returns"),
    ("I would like to exchange this jacket", "returns"),
]
LABELS = ["billing", "shipping", "returns"]


def label_logprobs(client, prefix, texts):
    """[len(texts), len(LABELS)] log p(" label" | prefix, text): all Score jobs in flight at once."""
    ids = [client.submit("score", text="Message: %s\nIntent:" % t, continuation=" " + lab,
                         embeddings=prefix)
           for t in texts for lab in LABELS]
    res = client.collect(ids)
    return np.array([r.logprob_sum for r in res], dtype=np.float64).reshape(len(texts), len(LABELS))


def loss_and_accuracy(client, prefix, data):
    lp = label_logprobs(client, prefix, [t for t, _ in data])
    logz = np.logaddexp.reduce(lp, axis=1)  # normalise over the label set
    gold = np.array([LABELS.index(lab) for _, lab in data])
    nll = float(np.mean(logz - lp[np.arange(len(data)), gold]))
    acc = float(np.mean(lp.argmax(axis=1) == gold))
    return nll, acc


def main():
    p = parser(__doc__ or "P-tune a classifier prompt with Score requests")
    p.add_argument("--virtual-tokens", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--perturb", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="ptuned_prefix.npy")
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    with connect(args) as c:
        hidden = c.health().hidden
        seed_rows = c.embed("Classify the customer message as billing, shipping or returns.")
        prefix = seed_rows[-args.virtual_tokens:].astype(np.float32).copy()
        print("model hidden=%d; prefix %s seeded from Embed" % (hidden, prefix.shape))
        nll, acc = loss_and_accuracy(c, prefix, TRAIN)
        print("step  0: loss %.4f  accuracy %.2f" % (nll, acc))
        for step in range(1, args.steps + 1):
            # SPSA: one random +/- direction, two evaluations, a gradient estimate along it.
            delta = rng.choice([-1.0, 1.0], size=prefix.shape).astype(np.float32)
            lp, _ = loss_and_accuracy(c, prefix + args.perturb * delta, TRAIN)
            lm, _ = loss_and_accuracy(c, prefix - args.perturb * delta, TRAIN)
            grad = (lp - lm) / (2 * args.perturb) * delta
            prefix -= (args.lr / np.sqrt(step)) * np.clip(grad, -1.0, 1.0)
            nll, acc = loss_and_accuracy(c, prefix, TRAIN)
            print("step %2d: loss %.4f  accuracy %.2f" % (step, nll, acc))
    np.save(args.out, prefix.astype(np.float32))
    print("saved learned prefix %s to %s (register it: prefixctl adapter add NAME --tenant T --file %s)"
          % (prefix.shape, args.out, args.out))


if __name__ == "__main__":
    main()
