"""ranking_map against scikit-learn's NDCG and a direct per-query definition of MAP@k, MRR and
recall@k, on seeded random, hypothesis-generated and hand-made edge-case inputs; bad inputs give
standard errors naming the file and row."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import dcg_score, ndcg_score

from bench.bench_ranking import direct
from services.scorer.builtin.ranking import ranking_map
from shared.errors import AutoscorerError, ErrorCode
from shared.models import Result
from shared.workspace import Workspace

Judged = dict[str, dict[str, float]]  # query -> doc -> relevance
Ranked = dict[str, list[str]]


def write(root: Path, judged: Judged, ranked: Ranked, order: list[str] | None = None) -> None:
    (root / "input").mkdir(exist_ok=True)
    (root / "output").mkdir(exist_ok=True)
    gt = "".join(f"{q},{d},{r!r}\n" for q, docs in judged.items() for d, r in docs.items())
    (root / "input" / "gt.csv").write_text("query_id,doc_id,relevance\n" + gt)
    rows = "".join(f"{q},{' '.join(ranked[q])}\n" for q in (order or list(ranked)))
    (root / "output" / "pred.csv").write_text("query_id,ranked_ids\n" + rows)


def score(root: Path, judged: Judged, ranked: Ranked, **params: object) -> Result:
    write(root, judged, ranked)
    return ranking_map.score(Workspace.at(root), params)


def sklearn_ndcg(judged: dict[str, float], ranked: list[str], k: int) -> float:
    """sklearn's DCG of the ranking (unranked documents gain nothing) over its ideal DCG."""
    docs = list(dict.fromkeys([*ranked, *judged, "\0pad"]))
    score = [len(ranked) - ranked.index(d) if d in ranked else 0 for d in docs]
    score[-1] = -1
    ideal = [[judged.get(d, 0.0) for d in docs]]
    gained = [[judged.get(d, 0.0) if d in ranked else 0.0 for d in docs]]
    value = float(dcg_score(gained, [score], k=k) / dcg_score(ideal, ideal, k=k))
    if len(ranked) >= k or all(judged.get(d, 0) == 0 for d in docs if d not in ranked):
        assert math.isclose(value, ndcg_score(ideal, [score], k=k), rel_tol=0, abs_tol=1e-12)
    return value


def check(result: Result, root: Path, judged: Judged, ranked: Ranked, k: int) -> None:
    per_query = root / "output" / "artifacts" / "per_query.csv"
    rows = list(csv.DictReader(io.StringIO(per_query.read_text())))
    assert [r["query_id"] for r in rows] == list(judged)
    means: dict[str, list[float]] = {"map": [], "mrr": [], "recall": [], "ndcg": []}
    for row in rows:
        q = row["query_id"]
        if not any(r > 0 for r in judged[q].values()):
            assert row["has_relevant"] == "false"
            continue
        ap, rr, recall = direct(judged[q], ranked[q], k)
        ndcg = sklearn_ndcg(judged[q], ranked[q], k)
        for name, want in (("ap", ap), ("rr", rr), ("recall", recall), ("ndcg", ndcg)):
            column = name if name == "rr" else f"{name}@{k}"
            assert abs(float(row[column]) - want) <= 1e-9, (q, name)
        for name, value in (("map", ap), ("mrr", rr), ("recall", recall), ("ndcg", ndcg)):
            means[name].append(value)
    for name, values in means.items():
        key = name if name == "mrr" else f"{name}@{k}"
        assert abs(result.metrics[key] - (float(np.mean(values)) if values else 0.0)) <= 1e-9
    assert result.summary["score"] == result.metrics[f"map@{k}"]


def run(root: Path, judged: Judged, ranked: Ranked, k: int) -> None:
    check(score(root, judged, ranked, k=k), root, judged, ranked, k)


def random_case(rng: np.random.Generator, n_queries: int) -> tuple[Judged, Ranked]:
    judged: Judged = {}
    ranked: Ranked = {}
    for q in range(n_queries):
        pool = [f"d{j}" for j in rng.permutation(40)[: rng.integers(1, 30)]]
        rels = rng.choice([0.0, 0.0, 1.0, 2.0, 3.0, 0.5], size=len(pool))
        judged[f"q{q}"] = dict(zip(pool, rels.tolist(), strict=True))
        candidates = [f"d{j}" for j in range(40)] + [f"x{j}" for j in range(10)]
        length = int(rng.integers(0, 25))
        ranked[f"q{q}"] = [candidates[i] for i in rng.permutation(len(candidates))[:length]]
    return judged, ranked


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_seeded_random_matches_references(tmp_path: Path, seed: int, k: int) -> None:
    judged, ranked = random_case(np.random.default_rng(seed), 60)
    run(tmp_path, judged, ranked, k)


DOC = st.sampled_from([f"d{i}" for i in range(12)])


@st.composite
def cases(draw: st.DrawFn) -> tuple[Judged, Ranked, int]:
    n = draw(st.integers(1, 6))
    judged: Judged = {}
    ranked: Ranked = {}
    for q in range(n):
        judged[f"q{q}"] = draw(
            st.dictionaries(
                DOC, st.sampled_from([0.0, 1.0, 2.0, 0.25, 7.0]), min_size=1, max_size=8
            )
        )
        ranked[f"q{q}"] = draw(st.lists(DOC, unique=True, max_size=12))
    return judged, ranked, draw(st.integers(1, 15))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_property_matches_references(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[Judged, Ranked, int]
) -> None:
    judged, ranked, k = case
    run(tmp_path_factory.mktemp("r"), judged, ranked, k)


def test_hand_made_values(tmp_path: Path) -> None:
    judged = {"a": {"x": 1.0, "y": 1.0, "z": 0.0}, "b": {"u": 3.0, "v": 3.0}, "c": {"w": 0.0}}
    ranked = {"a": ["z", "x", "n", "y"], "b": [], "c": ["w"]}
    result = score(tmp_path, judged, ranked, k=3)
    # a: hits at 2 (P=1/2); y at 4 is past k=3 -> AP = (1/2)/2; RR = 1/2; recall@3 = 1/2
    # b: empty ranking -> all 0; c: no relevant document -> left out of the means
    assert result.metrics["map@3"] == pytest.approx((0.25 + 0.0) / 2, abs=1e-12)
    assert result.metrics["mrr"] == pytest.approx(0.25, abs=1e-12)
    assert result.metrics["recall@3"] == pytest.approx(0.25, abs=1e-12)
    ndcg_a = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert result.metrics["ndcg@3"] == pytest.approx(ndcg_a / 2, abs=1e-12)
    assert result.metrics["n_queries"] == 3
    assert result.metrics["n_queries_without_relevant"] == 1


def test_order_of_rows_does_not_matter(tmp_path: Path) -> None:
    judged, ranked = random_case(np.random.default_rng(9), 20)
    first = score(tmp_path, judged, ranked, k=5)
    write(tmp_path, judged, ranked, order=sorted(ranked, reverse=True))
    assert ranking_map.score(Workspace.at(tmp_path), {"k": 5}).metrics == first.metrics


def error_of(root: Path, gt: str, pred: str, **params: object) -> AutoscorerError:
    (root / "input").mkdir(exist_ok=True)
    (root / "output").mkdir(exist_ok=True)
    (root / "input" / "gt.csv").write_text(gt)
    (root / "output" / "pred.csv").write_text(pred)
    with pytest.raises(AutoscorerError) as info:
        ranking_map.score(Workspace.at(root), params)
    return info.value


GT = "query_id,doc_id,relevance\nq1,a,1\nq1,b,0\nq2,c,2\n"
PRED = "query_id,ranked_ids\nq1,a b\nq2,c\n"


@pytest.mark.parametrize(
    ("gt", "pred", "code", "file", "row"),
    [
        (GT, "query_id,ranked_ids\nq1,a b\nq2,c\nq3,a\n", ErrorCode.MISMATCH, "pred", None),
        (GT, "query_id,ranked_ids\nq1,a b\n", ErrorCode.MISMATCH, "pred", None),
        (GT, "query_id,ranked_ids\nq1,a b\nq1,a\nq2,c\n", ErrorCode.BAD_FORMAT, "pred", None),
        (GT, "query_id,ranked_ids\nq1,a b a\nq2,c\n", ErrorCode.BAD_FORMAT, "pred", 1),
        (GT, "query_id,ranked_ids\nq1,a\nq2,zz c zz\n", ErrorCode.BAD_FORMAT, "pred", 2),
        (GT, "query_id,ranked_ids\nq1,a  b\nq2,c\n", ErrorCode.BAD_FORMAT, "pred", 1),
        (GT, "query_id,docs\nq1,a b\nq2,c\n", ErrorCode.BAD_FORMAT, "pred", None),
        (GT + "q1,a,3\n", PRED, ErrorCode.BAD_FORMAT, "gt", 4),
        (GT + "q3,d,-1\n", PRED, ErrorCode.BAD_FORMAT, "gt", 4),
        (GT + "q3,d,nan\n", PRED, ErrorCode.BAD_FORMAT, "gt", 4),
        (GT + "q3,d,inf\n", PRED, ErrorCode.BAD_FORMAT, "gt", 4),
        (GT + "q3,d,high\n", PRED, ErrorCode.BAD_FORMAT, "gt", 4),
        (GT + "q3,,1\n", PRED, ErrorCode.BAD_FORMAT, "gt", 4),
        ("query_id,doc_id\nq1,a\n", PRED, ErrorCode.BAD_FORMAT, "gt", None),
    ],
)
def test_bad_inputs_are_standard_errors(
    tmp_path: Path, gt: str, pred: str, code: ErrorCode, file: str, row: int | None
) -> None:
    error = error_of(tmp_path, gt, pred)
    assert error.code == code
    assert error.details["file"] == file
    if row is not None:
        assert error.details["rows"][0] == row


def test_missing_prediction_file(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "gt.csv").write_text(GT)
    with pytest.raises(AutoscorerError) as info:
        ranking_map.score(Workspace.at(tmp_path), {})
    assert info.value.code == ErrorCode.MISSING_FILE


@pytest.mark.parametrize("params", [{"k": 0}, {"k": "x"}, {"cutoff": 3}])
def test_bad_params(tmp_path: Path, params: dict[str, object]) -> None:
    assert error_of(tmp_path, GT, PRED, **params).code == ErrorCode.BAD_PARAMS


def test_example_workspace_runs_and_scores(tmp_path: Path) -> None:
    """The example's participant program (run as the platform would, in the workspace) gives a
    prediction file the scorer accepts, with the params of the example's meta.json."""
    example = Path(__file__).resolve().parents[2] / "examples" / "ranking"
    root = tmp_path / "ws"
    shutil.copytree(example, root)
    subprocess.run([sys.executable, "submission/predict.py"], cwd=root, check=True, timeout=60)
    params = json.loads((root / "meta.json").read_text())["params"]
    result = ranking_map.score(Workspace.at(root), params)
    assert 0.5 < result.summary["score"] <= 1.0
    assert result.metrics["n_queries"] == 5
