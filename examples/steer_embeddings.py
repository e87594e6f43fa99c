#!/usr/bin/python3
# Steering generation by editing embeddings: Embed returns the model's input rows for a text;
# adding a scaled "style direction" (difference of two Embed means) or mixing two prompts'
# rows changes what the model generates, with no fine-tuning. Prints each variant side by side.
import numpy as np

from _common import connect, parser


def main():
    p = parser("Steer generation by editing the input embeddings returned by Embed")
    p.add_argument("--prompt", default="Write one sentence about the weather today:")
    p.add_argument("--positive", default="wonderful, joyful, delighted, sunny")
    p.add_argument("--negative", default="terrible, gloomy, miserable, stormy")
    p.add_argument("--alphas", default="0,2,4", help="comma-separated steering strengths")
    p.add_argument("-n", "--max-tokens", type=int, default=16)
    args = p.parse_args()
    with connect(args) as c:
        rows = c.embed(args.prompt)                          # [n, hidden], BOS row first
        pos, neg = c.embed(args.positive), c.embed(args.negative)
        direction = pos[1:].mean(axis=0) - neg[1:].mean(axis=0)   # skip the BOS rows
        direction /= np.linalg.norm(direction) + 1e-12
        scale = float(np.sqrt((rows[1:] ** 2).mean(axis=1)).mean())  # typical row norm / sqrt(hidden)
        print("prompt: %d rows of width %d" % rows.shape)
        # Token ids round-trip: sending Embed's own rows must equal sending the text.
        base_text = c.generate(args.prompt, max_tokens=args.max_tokens)
        base_rows = c.generate(None, embeddings=rows, max_tokens=args.max_tokens)
        print("text           : %r" % base_text.text)
        print("same as rows   : %r (%s)" % (base_rows.text, "equal" if base_rows.token_ids == base_text.token_ids
                                                     else "differs"))
        for a in [float(x) for x in args.alphas.split(",")]:
            edited = rows.copy()
            edited[1:] += a * scale * np.sqrt(rows.shape[1]) * direction / rows.shape[0]
            r = c.generate(None, embeddings=edited.astype(np.float32), max_tokens=args.max_tokens)
            print("alpha %-8g : %r" % (a, r.text))
        # Interpolation between two prompts of equal length (truncate to the shorter one).
        other = c.embed("Write one sentence about the stock market today:")
        k = min(len(rows), len(other))
        for t in (0.25, 0.5, 0.75):
            mix = ((1 - t) * rows[:k] + t * other[:k]).astype(np.float32)
            print("mix %.2f      : %r" % (t, c.generate(None, embeddings=mix, max_tokens=args.max_tokens).text))


if __name__ == "__main__":
    main()
