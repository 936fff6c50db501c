"""Benchmark ``ranking_map`` against its references on a large seeded retrieval run.

Run ``python -m bench.bench_ranking`` (50,000 queries x 100 ranked ids, 20 judgements per query)
or ``--queries 5000``; best of ``--repeat`` interleaved runs. The reference is scikit-learn's
``ndcg_score`` (one call on the padded (queries, documents) matrix) plus the direct definition of
AP@k, RR and recall@k as a Python loop over each query's ranking with a dict of its judgements,
i.e. what one writes without this scorer. Two ratios are printed: end to end from the two CSV
files (the reference reads them with the ``csv`` module), and ours end to end against the
reference's metrics alone (its reading not timed), the conservative one. Values agree to 1e-9.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import ndcg_score

from services.scorer.builtin.ranking import ranking_map
from shared.workspace import Workspace

K = 10


Run = tuple[list[list[str]], list[list[float]], list[list[str]]]  # docs, relevances, rankings


def make(queries: int, length: int, judged: int, seed: int) -> Run:
    rng = np.random.default_rng(seed)
    pool = length * 3
    docs, rels, ranked = [], [], []
    for _ in range(queries):
        chosen = rng.choice(pool, size=judged, replace=False)
        docs.append([f"d{j}" for j in chosen])
        rels.append(rng.choice([0.0, 1.0, 2.0, 3.0], size=judged, p=[0.4, 0.3, 0.2, 0.1]).tolist())
        ranked.append([f"d{j}" for j in rng.permutation(pool)[:length]])
    return docs, rels, ranked


def write(
    root: Path, docs: list[list[str]], rels: list[list[float]], ranked: list[list[str]]
) -> None:
    (root / "input").mkdir()
    (root / "output").mkdir()
    with (root / "input" / "gt.csv").open("w") as out:
        out.write("query_id,doc_id,relevance\n")
        for q, (ds, rs) in enumerate(zip(docs, rels, strict=True)):
            out.writelines(f"q{q},{d},{r:g}\n" for d, r in zip(ds, rs, strict=True))
    with (root / "output" / "pred.csv").open("w") as out:
        out.write("query_id,ranked_ids\n")
        out.writelines(f"q{q},{' '.join(r)}\n" for q, r in enumerate(ranked))


def read(root: Path) -> Run:
    """The files as one reads them with the csv module (gt rows of a query are contiguous)."""
    docs: dict[str, list[str]] = {}
    rels: dict[str, list[float]] = {}
    with (root / "input" / "gt.csv").open(newline="") as handle:
        for query, doc, relevance in itertools.islice(csv.reader(handle), 1, None):
            docs.setdefault(query, []).append(doc)
            rels.setdefault(query, []).append(float(relevance))
    with (root / "output" / "pred.csv").open(newline="") as handle:
        ranked = {q: r.split(" ") for q, r in itertools.islice(csv.reader(handle), 1, None)}
    return list(docs.values()), list(rels.values()), [ranked[q] for q in docs]


def direct(judged: dict[str, float], ranked: list[str], k: int) -> tuple[float, float, float]:
    """AP@k, RR and recall@k of one query as docs/SCORERS.md defines them, a plain Python loop
    (the tests check the scorer against it too); the query must have a relevant document."""
    n_rel = sum(1 for r in judged.values() if r > 0)
    hits, precision_sum, rr = 0, 0.0, 0.0
    for i, doc in enumerate(ranked, start=1):
        relevant = judged.get(doc, 0.0) > 0
        if relevant and rr == 0.0:
            rr = 1.0 / i
        if relevant and i <= k:
            hits += 1
            precision_sum += hits / i
    return precision_sum / min(n_rel, k), rr, hits / n_rel


def reference(
    docs: list[list[str]], rels: list[list[float]], ranked: list[list[str]]
) -> dict[str, float]:
    aps, rrs, recalls, used = [], [], [], []
    width = max(len(r) for r in ranked) + max(len(d) for d in docs)
    y_true = np.zeros((len(docs), width))
    y_score = np.zeros((len(docs), width))
    for q, (ds, rs, rank) in enumerate(zip(docs, rels, ranked, strict=True)):
        judged = dict(zip(ds, rs, strict=True))
        n_rel = sum(1 for r in rs if r > 0)
        if not n_rel:
            continue
        ap, rr, recall = direct(judged, rank, K)
        aps.append(ap)
        rrs.append(rr)
        recalls.append(recall)
        columns = list(dict.fromkeys([*rank, *ds]))
        y_true[q, : len(columns)] = [judged.get(d, 0.0) for d in columns]
        y_score[q, : len(rank)] = np.arange(len(rank), 0, -1)
        used.append(q)
    ndcg = ndcg_score(y_true[used], y_score[used], k=K)
    return {
        "map": float(np.mean(aps)),
        "mrr": float(np.mean(rrs)),
        "recall": float(np.mean(recalls)),
        "ndcg": float(ndcg),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--judged", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    docs, rels, ranked = make(args.queries, args.length, args.judged, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write(root, docs, rels, ranked)
        ref_s = read_s = ours_s = float("inf")
        for _ in range(args.repeat):  # interleaved, best of each: the machine is shared
            started = time.perf_counter()
            parsed = read(root)
            read_s = min(read_s, time.perf_counter() - started)
            started = time.perf_counter()
            ref = reference(*parsed)
            ref_s = min(ref_s, time.perf_counter() - started)
            started = time.perf_counter()
            result = ranking_map.score(Workspace.at(root), {"k": K, "per_query": False})
            ours_s = min(ours_s, time.perf_counter() - started)
    ours = {
        "map": result.metrics[f"map@{K}"],
        "mrr": result.metrics["mrr"],
        "recall": result.metrics[f"recall@{K}"],
        "ndcg": result.metrics[f"ndcg@{K}"],
    }
    diff = max(abs(float(ours[name]) - ref[name]) for name in ref)  # type: ignore[arg-type]
    items = args.queries * args.length
    print(f"{args.queries} queries, {items} ranked items, {args.queries * args.judged} judgements")
    print(
        f"reference: csv reading {read_s:.2f} s + sklearn ndcg_score and direct loop "
        f"{ref_s:.2f} s; ours (incl. CSV) {ours_s:.2f} s; ratio end to end "
        f"{ours_s / (read_s + ref_s):.3f}, vs reference metrics only {ours_s / ref_s:.3f}; "
        f"max abs diff {diff:.1e}"
    )
    assert diff <= 1e-9


if __name__ == "__main__":
    main()
