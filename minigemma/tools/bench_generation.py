"""`minigemma bench --generation`: what batching and speculative decoding buy, in one run.

    batch        aggregate decode tok/s of B rows decoded together (B = 1, 2, 4, 6, 8), greedy,
                 DECODE_TOKENS new tokens per row, every row a different prompt; the ratio to
                 B = 1. Decoding at B = 1 is bound by reading the weights; B rows share each read.
    head         ms of one `linear` of M rows through the output head: what a step of M rows
                 (or a verification of M − 1 drafts) costs in the largest matrix
    speculative  a repetitive task (rewriting a passage given in the prompt): decode tok/s of
                 plain greedy and of prompt-lookup speculative decoding, their ratio, the
                 acceptance rate, and whether the two outputs are identical (they must be)

Timings are wall clock in this process, best of REPEATS, after a warm-up run (Numba compiles);
the load average before and after is printed, since a busy machine slows every figure.
"""
import os
import sys
import time

DECODE_TOKENS, REPEATS = 64, 2
BATCH_SIZES = (1, 2, 4, 6, 8)
PROMPTS = ["The river bends past the old mill, where", "def fibonacci(n):\n    ",
           "Once upon a time, in a small village", "The three primary colours are",
           "To make bread you need flour, water,", "The capital of France is",
           "A list of fruits: apple, banana,", "In 1969 the first people to walk on"]
PASSAGE = ("The river bends past the old mill, where workers once ground wheat into flour for "
           "the town. In the evening the lamps are lit one by one along the quay, and the boats "
           "come back with the tide. Children run along the water's edge while the bakers "
           "close their shutters and the bells of the church ring seven times.")
REWRITE = (f"<start_of_turn>user\nRepeat the following passage exactly, word for word.\n\n"
           f"{PASSAGE}<end_of_turn>\n<start_of_turn>model\n")


def _best(measure):
    return max((measure() for _ in range(REPEATS)), key=lambda r: r[0])


def head_rows(model, rows=(1, 2, 3, 4, 5, 6, 8)):
    """{M: ms} of one `linear` of M rows through the tied output head (the largest matrix, read
    on every step): what a decode step of a batch of M rows, or a verification of M − 1 drafts,
    costs there. Flat in M while the read of the weight dominates; linear once compute does."""
    import numpy as np
    be, head = model.backend, model.network.params["embedding"]
    out = {}
    for m in rows:
        x = be.asarray(np.random.default_rng(0).standard_normal((m, model.config.d_model))
                       .astype(np.float32))
        be.linear(x, head)  # warm-up

        def measure():
            start = time.perf_counter()
            be.linear(x, head)
            return (-(time.perf_counter() - start),)
        out[m] = -_best(measure)[0] * 1e3
    return out


def batch_decode(model, batch_sizes=BATCH_SIZES, tokens=DECODE_TOKENS):
    """{B: aggregate decode tok/s} of greedy decoding of B different prompts together."""
    ids = [model.tokenizer.encode(p) for p in PROMPTS]
    model.generate_ids(ids[:2], 4, stop_ids=set())  # warm-up (compilation)
    out = {}
    for b in batch_sizes:
        rows = [ids[i % len(ids)] for i in range(b)]

        def measure():
            model.generate_ids(rows, tokens, stop_ids=set())
            return (model.last_stats.decode_tok_s,)
        out[b] = _best(measure)[0]
    return out


def speculative_decode(model, tokens=2 * DECODE_TOKENS, speculative=True):
    """(plain decode tok/s, speculative decode tok/s, acceptance rate, identical outputs) on the
    rewriting task, greedy."""
    prompt = model.tokenizer.encode(REWRITE, parse_special=True)
    model.generate_ids(prompt, 8, speculative=speculative)  # warm-up of both paths
    model.generate_ids(prompt, 8)

    def run(spec):
        def measure():
            ids = model.generate_ids(prompt, tokens, speculative=spec)
            return model.last_stats.decode_tok_s, ids, model.last_stats.acceptance_rate
        return _best(measure)
    plain_rate, plain_ids, _ = run(False)
    spec_rate, spec_ids, acceptance = run(speculative)
    return plain_rate, spec_rate, acceptance, spec_ids == plain_ids


def run(args):
    """Print both tables for each backend asked for (default: numba, else numpy)."""
    from minigemma.backends import available_backends
    from minigemma.model import load
    names = args.backends.split(",") if args.backends else [
        "numba" if available_backends()["numba"] is None else "numpy"]
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    for name in names:
        model = load(args.model, backend=name)
        print(f"\n{name}: batched greedy decoding, {DECODE_TOKENS} tokens per row")
        rates = batch_decode(model)
        print("| B | aggregate decode tok/s | × B = 1 |\n|---:|---:|---:|")
        for b, rate in rates.items():
            print(f"| {b} | {rate:.1f} | {rate / rates[1]:.2f} |")
        cost = head_rows(model)
        print(f"\n{name}: one linear through the output head, ms by rows M")
        print("| M | " + " | ".join(map(str, cost)) + " |\n|---|" + "---:|" * len(cost))
        print("| ms | " + " | ".join(f"{v:.1f}" for v in cost.values()) + " |")
        plain, spec, acceptance, same = speculative_decode(model)
        print(f"\n{name}: speculative decoding (prompt lookup) on a rewriting task, greedy")
        print("| plain tok/s | speculative tok/s | ratio | acceptance | same output |")
        print("|---:|---:|---:|---:|:---:|")
        print(f"| {plain:.1f} | {spec:.1f} | {spec / plain:.2f} | {acceptance:.0%} | "
              f"{'yes' if same else 'NO'} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--backends", default=None)
    sys.exit(run(parser.parse_args()))
