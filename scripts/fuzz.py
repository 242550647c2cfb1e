"""The fuzz campaign of issue 12, in full: `python scripts/fuzz.py [--cases N] [--seed S]`.

Draws N corrupted checkpoints, GGUF files, configs, tokenizer files and bad API / CLI arguments
from the seed (tests/helpers/fuzz_campaign.py says what and how each outcome is judged), runs
them in memory- and time-limited worker processes, prints the counts by kind and outcome and
every failing case with the command that replays it, and exits 1 if any case failed. CI runs a
fixed-seed subset (tests/fuzz/test_fuzz_inputs.py).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from helpers.fuzz_campaign import CASE_SECONDS, run_campaign, summary  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--jobs", type=int, default=2, help="worker processes at a time")
    p.add_argument("--only", type=int, nargs="*", help="replay these case indices")
    p.add_argument("--case-seconds", type=int, default=CASE_SECONDS)
    p.add_argument("--json", help="write every outcome to this file")
    args = p.parse_args(argv)
    indices = args.only if args.only else list(range(args.cases))
    start = time.perf_counter()

    def progress(done, total):
        print(f"\r{done}/{total} cases, {time.perf_counter() - start:.0f} s", end="",
              file=sys.stderr, flush=True)
    outcomes = run_campaign(args.seed, indices, jobs=args.jobs, case_seconds=args.case_seconds,
                            progress=progress)
    print(file=sys.stderr)
    counts = summary(outcomes)
    print(json.dumps(counts, indent=2))
    failed = [o for o in outcomes if o.failed]
    for o in failed:
        print(f"FAILED case {o.index} [{o.kind}] {o.mutation}: {o.status}: {o.detail}")
        print(f"  replay: python scripts/fuzz.py --seed {args.seed} --only {o.index}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([o.__dict__ for o in outcomes], f, indent=1)
    print(f"{len(outcomes)} cases in {time.perf_counter() - start:.0f} s: "
          f"{len(outcomes) - len(failed)} clean, {len(failed)} not clean")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
