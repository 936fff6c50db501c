"""What the metric benchmarks share: their command line, interleaved best-of timing of ours and
scikit-learn on the same data, the ratio line and the identity check."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any


def arguments(doc: str | None, rows: int, repeat: int = 1, **extra: int) -> argparse.Namespace:
    """``--rows``, ``--seed``, ``--repeat`` (defaults ``rows``, 0, ``repeat``) and an int option
    per ``extra``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=repeat, help="best of this many runs each")
    for name, default in extra.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def compare(
    label: str, ours: Callable[[], Any], theirs: Callable[[], Any], repeat: int = 1
) -> None:
    """Time both ``repeat`` times, interleaved (the first run of each pays page faults), print
    the best times and their ratio, and exit non-zero unless the values are identical."""
    runs = [(timed(ours), timed(theirs)) for _ in range(repeat)]
    (our_value, _), (their_value, _) = runs[0]
    ours_s = min(run[0][1] for run in runs)
    theirs_s = min(run[1][1] for run in runs)
    same = our_value == their_value
    print(
        f"{label}: ours {ours_s:.3f} s, sklearn {theirs_s:.3f} s, "
        f"ratio {ours_s / theirs_s:.4f}, identical {same}"
    )
    if not same:
        raise SystemExit(
            f"values differ from scikit-learn:\n  ours    {our_value}\n  sklearn {their_value}"
        )
