"""Robustness figures of run directories and argument checks, from the same procedures
the tests use (tests/test_rundir.py, tests/test_fuzz.py), at larger counts:

- SIGKILLs at random moments (from outside during training, and from inside in the
  middle of a checkpoint write), each followed by a resume: kills survived, and whether
  the final checkpoint is bit-identical to an uninterrupted run's;
- single-bit flips of a real checkpoint: refused (as corrupt, or as damaged by the
  checksum), loaded unchanged (a byte nothing reads), loaded changed (must be 0);
- two writers started at once on one folder: trials where exactly one ran and the
  other was refused by name;
- bad arguments to the public API and the command line, by outcome class.

Usage: PYTHONPATH=. python bench/robustness.py [--kills 30] [--flips 1000] [--trials 20]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
torch.set_num_threads(1)

import test_fuzz as fuzz  # noqa: E402
import test_rundir as rd  # noqa: E402


def kills(total: int, fresh: int) -> None:
    survived = exact = runs = in_write = 0
    landed = []
    for seed in itertools.count():
        if survived >= total:
            break
        with tempfile.TemporaryDirectory() as tmp:
            result = rd.kill_and_resume(Path(tmp), epochs=40, kills=10, seed=seed)
        runs += 1
        survived += result["kills"]
        in_write += result["in_write"]
        exact += result["exact"]
        landed += result["landed_at_epochs"]
    print(
        f"kills (forked processes): {survived} SIGKILLs ({in_write} in the middle of a "
        f"checkpoint write) in {runs} runs, every one resumed; "
        f"{exact}/{runs} final checkpoints bit-identical to the uninterrupted run; "
        f"kills landed at saved epochs {sorted(collections.Counter(landed).items())}"
    )
    if fresh:
        with tempfile.TemporaryDirectory() as tmp:
            result = rd.kill_and_resume(Path(tmp), epochs=40, kills=fresh, fork=False)
        print(
            f"kills (fresh interpreters): {result['kills']} SIGKILLs ({result['in_write']} in "
            f"a write), final checkpoint "
            f"bit-identical: {result['exact']}"
        )


def flips(count: int) -> None:
    import probae

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        train = probae.data.load("digits", "train")[:128]
        rd._fit(rd._vae(torch.device("cpu")), train, folder)
        path = folder / rd.CHECKPOINT_NAME
        counts = rd.flip_trials(path, count, seed=1)
        # the same flips, but told apart: torch refused the file, or the checksum did
        damaged = 0
        import random

        rng = random.Random(1)
        raw0 = path.read_bytes()
        for _ in range(count):
            raw = bytearray(raw0)
            at = rng.randrange(len(raw))
            raw[at] ^= 1 << rng.randrange(8)
            (folder / "d.pt").write_bytes(bytes(raw))
            try:
                rd.read_checkpoint(folder / "d.pt")
            except ValueError as error:
                damaged += "damaged" in str(error)
    print(
        f"bit flips of a {len(raw0)}-byte checkpoint: {count} flips, {counts['refused']} refused "
        f"({damaged} by the checksum, {counts['refused'] - damaged} as corrupt), "
        f"{counts['unchanged']} loaded unchanged, {counts['changed']} loaded changed"
    )


def concurrency(trials: int, fresh: int) -> None:
    good = 0
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                rd._check_concurrent_trial(Path(tmp) / "run")
                good += 1
            except AssertionError as error:
                print("  trial failed:", error)
    good_fresh = 0
    for _ in range(fresh):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                rd._check_concurrent_trial(Path(tmp) / "run", fork=False)
                good_fresh += 1
            except AssertionError as error:
                print("  trial failed:", error)
    print(
        f"two writers at once: {good}/{trials} forked trials and {good_fresh}/{fresh} "
        "fresh-interpreter trials had one run, the other refused, and a whole checkpoint"
    )


def _draw(strategy, count: int) -> list:
    """``count`` values of a hypothesis strategy, the same on every run."""
    from hypothesis import given, settings

    seen = []

    @settings(max_examples=count, deadline=None, database=None, derandomize=True)
    @given(value=strategy)
    def draw(value):
        seen.append(value)

    draw()
    return seen


class _Capture:
    """What cli_outcome reads, in place of pytest's capsys."""

    def __init__(self, err):
        self.err = err

    def readouterr(self):
        return type("Captured", (), {"err": self.err.getvalue(), "out": ""})()


def fuzzed(per_case: int) -> None:
    outcomes = collections.Counter()
    bad = []

    for target, arg in fuzz.CASES:
        for value in _draw(fuzz.VALUES, per_case):
            good = fuzz.TARGETS[target][2][arg](value)
            if good and ((target, arg) in fuzz.EXPENSIVE or not fuzz._small(value)):
                continue
            result = fuzz.outcome(target, arg, value)
            kind = {"ok": "good value accepted", "named": "bad value: error naming it"}.get(
                result, result.split(":")[0]
            )
            outcomes[kind] += 1
            if result not in ("ok", "named"):
                bad.append(f"{target}({arg}={value!r}): {result}")
    print(f"API fuzz: {sum(outcomes.values())} calls: {dict(outcomes)}")
    for line in bad[:10]:
        print("  ", line)

    import contextlib
    import io

    cli_outcomes = collections.Counter()
    texts = fuzz.CLI_TEXT

    for option in fuzz.CLI_OPTIONS:
        for text in _draw(texts, per_case):
            if fuzz.CLI_OPTIONS[option](text) or (
                "\x00" in text and option not in ("--run-dir", "--device")
            ):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    result = fuzz.cli_outcome(option, text, Path(tmp), _Capture(err))
            cli_outcomes[result.split(":")[0]] += 1
            if result != "one-line error":
                print(f"   {option}={text!r}: {result}")
    print(f"CLI fuzz: {sum(cli_outcomes.values())} bad values: {dict(cli_outcomes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--fresh-kills", type=int, default=4)
    parser.add_argument("--flips", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--fresh-trials", type=int, default=3)
    parser.add_argument("--fuzz", type=int, default=40, help="values drawn per argument")
    parser.add_argument("--only", choices=["kills", "flips", "concurrency", "fuzz"])
    args = parser.parse_args()
    began = time.perf_counter()
    if args.only in (None, "flips"):
        flips(args.flips)
    if args.only in (None, "concurrency"):
        concurrency(args.trials, args.fresh_trials)
    if args.only in (None, "kills"):
        kills(args.kills, args.fresh_kills)
    if args.only in (None, "fuzz"):
        fuzzed(args.fuzz)
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
