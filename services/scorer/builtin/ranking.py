"""``ranking_map``: MAP@k, NDCG@k, MRR and recall@k of ranked retrieval lists, per query.

``input/gt.csv`` has the judgements, one row per (query, document): ``query_id,doc_id,relevance``
(a finite number >= 0; a document is *relevant* when its relevance is > 0; documents without a
row are not relevant). ``output/pred.csv`` has one row per ground-truth query:
``query_id,ranked_ids`` with the document ids best first, separated by single spaces (an empty
value is an empty ranking). Ids are compared byte for byte, like the other CSV scorers.

Everything is vectorised over all (query, ranked document) items at once: documents are
integer-coded with pyarrow, each ranked item is looked up in the judgements by one
``searchsorted`` on (query, document) keys, and every per-query sum is a ``bincount``.
The metric definitions are in docs/SCORERS.md; NDCG@k equals scikit-learn's ``ndcg_score``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import BaseModel, ConfigDict, Field

from services.scorer.builtin import tabular
from services.scorer.builtin.regression import to_floats
from services.scorer.builtin.tabular import GT, PRED, Column, CsvFile, IntArray
from shared.errors import ErrorCode
from shared.files import atomic_write_bytes, make_artifact
from shared.models import MetricValue, Result
from shared.scoring import register
from shared.workspace import Workspace

GT_HEADER = ("query_id", "doc_id", "relevance")
PRED_HEADER = ("query_id", "ranked_ids")
EXPECTED_FILES = ("input/gt.csv", "output/pred.csv")
PER_QUERY_PATH = "output/artifacts/per_query.csv"
DESCRIPTION = (
    "Retrieval ranking per query: MAP@k, NDCG@k (equal to scikit-learn's ndcg_score), MRR and "
    "recall@k, averaged over the queries that have a relevant document."
)

FloatArray = npt.NDArray[np.float64]


class RankingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=1_000_000, description="cut-off of MAP@k, NDCG@k and recall@k")
    per_query: bool = Field(True, description=f"write every query's metrics to {PER_QUERY_PATH}")


@dataclass(frozen=True, slots=True)
class Judgements:
    """Ground truth rows: query ids (first-seen order), and per row its query, document (codes)
    and relevance."""

    queries: pa.Array
    query: IntArray
    doc: IntArray
    relevance: FloatArray


@dataclass(frozen=True, slots=True)
class Rankings:
    """Every relevant ranked item: its query (ground-truth code), 1-based position and relevance,
    grouped by query and in rank order."""

    query: IntArray
    position: IntArray
    relevance: FloatArray


@dataclass(frozen=True, slots=True)
class PerQuery:
    """Each metric per query, in ground-truth query order; ``judged`` = has a relevant doc."""

    ap: FloatArray
    ndcg: FloatArray
    rr: FloatArray
    recall: FloatArray
    judged: npt.NDArray[np.bool_]


def _bad(source: CsvFile, column: str, rows: IntArray, problem: str, ids: pa.Array) -> Exception:
    shown = [int(r) + 1 for r in rows[: tabular.EXAMPLES]]
    queries = [ids[r - 1].as_py() for r in shown]
    return source.error(
        ErrorCode.BAD_FORMAT,
        f"{column} at row {shown[0]} (query {queries[0]!r}) {problem}",
        column=column,
        rows=shown,
        ids=queries,
    )


def _codes(values: pa.ChunkedArray) -> tuple[pa.Array, IntArray]:
    """Distinct values (first-seen order) and each value's index into them."""
    encoded = pa.chunked_array(values.chunks, type=pa.string()).dictionary_encode()
    if not encoded.num_chunks:
        return pa.array([], type=pa.string()), np.zeros(0, dtype=np.int64)
    dictionary = encoded.chunks[-1].dictionary
    codes = [np.asarray(c.indices.to_numpy(), dtype=np.int64) for c in encoded.chunks]
    return dictionary, np.concatenate(codes)


def read_judgements(ws: Workspace) -> tuple[Judgements, pa.Array]:
    """Judgements, and the judged documents (their codes index it)."""
    table, header = tabular.read_table(ws, GT, [GT_HEADER])
    queries, doc_ids, relevance_text = table.columns
    tabular.refuse_empty_values(Column(queries, queries, (header[0], header[0])), GT)
    tabular.refuse_empty_values(Column(queries, doc_ids, (header[0], header[1])), GT)
    relevance = to_floats(Column(queries, relevance_text, (header[0], header[2])), GT)
    negative = np.flatnonzero(relevance < 0)
    if len(negative):
        raise _bad(GT, "relevance", negative, "is negative", queries)
    query_values, query = _codes(queries)
    all_docs, doc = _codes(doc_ids)
    key = query * max(len(all_docs), 1) + doc
    sorted_key = np.sort(key)
    if np.any(sorted_key[1:] == sorted_key[:-1]):
        order = np.argsort(key, kind="stable")
        repeated = np.flatnonzero(key[order][1:] == key[order][:-1])
        raise _bad(GT, "doc_id", np.sort(order[repeated + 1]), "is judged twice", queries)
    return Judgements(query_values, query, doc, relevance), all_docs


def read_rankings(ws: Workspace) -> tuple[pa.ChunkedArray, pa.ListArray]:
    table, header = tabular.read_table(ws, PRED, [PRED_HEADER])
    queries, ranked = table.columns
    lists = pc.split_pattern(ranked.combine_chunks(), " ")
    empty_value = np.asarray(pc.equal(pc.binary_length(ranked), 0).to_numpy(zero_copy_only=False))
    lists = pc.if_else(pa.array(empty_value), pa.scalar([], lists.type), lists)
    lengths = np.asarray(pc.list_value_length(lists).to_numpy(zero_copy_only=False))
    flat = pc.list_flatten(lists)
    blank = np.flatnonzero(pc.equal(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False))
    if len(blank):
        row = np.searchsorted(np.cumsum(lengths), blank, side="right")
        rows = np.unique(row)
        raise _bad(
            PRED,
            header[1],
            rows,
            "has an empty id (ids are separated by one space)",
            queries.combine_chunks(),
        )
    return queries, lists


def rank_items(
    judged: Judgements, all_docs: pa.Array, queries: pa.ChunkedArray, lists: pa.ListArray
) -> Rankings:
    """The relevant ranked items, with their query and position; MISMATCH unless pred lists
    exactly the gt queries, BAD_FORMAT for a query listed twice or a document ranked twice.

    Ranked ids are dictionary-encoded once (pyarrow hashing); every item gets a (row, document)
    key; the keys are sorted once, which finds repeats, and each relevant judgement is looked up
    among them with one ``searchsorted`` (a rule: fewer judgements than ranked items)."""
    order = tabular.align(pa.chunked_array([judged.queries]), queries)  # gt query -> pred row
    n_q = len(judged.queries)
    row_of_query = np.arange(n_q, dtype=np.int64) if order is None else order
    lengths = np.asarray(pc.list_value_length(lists).to_numpy(zero_copy_only=False), np.int64)
    ranked_docs, code = _codes(pa.chunked_array([pc.list_flatten(lists)]))
    n_codes = max(len(ranked_docs), 1)
    key = np.repeat(np.arange(len(lengths), dtype=np.int64) * n_codes, lengths)
    key += code
    sorted_key, item = sort_with_index(key)
    repeated = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])
    if len(repeated):
        rows = np.unique(sorted_key[repeated] // n_codes)
        raise _bad(PRED, "ranked_ids", rows, "ranks a document twice", queries.combine_chunks())
    judged_code = _index_in(all_docs, ranked_docs)[judged.doc]
    wanted = np.flatnonzero((judged_code >= 0) & (judged.relevance > 0))
    target, by_target = sort_with_index(
        row_of_query[judged.query[wanted]] * n_codes + judged_code[wanted]
    )
    wanted = wanted[by_target]  # sorted needles: the binary searches walk memory in order
    slot = np.searchsorted(sorted_key, target).clip(max=max(len(key) - 1, 0))
    hit = (sorted_key[slot] == target) if len(key) else np.zeros(len(target), dtype=np.bool_)
    found = item[slot[hit]]
    by_item = np.argsort(found)
    found = found[by_item]  # grouped by row (= query), then by rank
    ends = np.cumsum(lengths)
    row = np.searchsorted(ends, found, side="right")
    query = np.empty(n_q, dtype=np.int64)
    query[row_of_query] = np.arange(n_q, dtype=np.int64)
    return Rankings(
        query=query[row],
        position=found - (ends - lengths)[row] + 1,
        relevance=judged.relevance[wanted[hit]][by_item],
    )


def sort_with_index(key: IntArray) -> tuple[IntArray, IntArray]:
    """``key`` sorted, and the index each sorted value came from (an argsort), for non-negative
    keys. The index is packed into the low bits so a plain (SIMD) sort does the work, which is
    several times faster than ``argsort``; keys too large to pack fall back to ``argsort``."""
    n = len(key)
    bits = max(n - 1, 1).bit_length()
    if n and (int(key.max()) + 1) < (1 << (62 - bits)):
        packed = (key << bits) | np.arange(n, dtype=np.int64)
        packed.sort()
        return packed >> bits, packed & ((1 << bits) - 1)
    index = np.argsort(key, kind="stable")
    return key[index], index


def _index_in(values: pa.Array, value_set: pa.Array) -> IntArray:
    """Position of each value in ``value_set`` (hashing), -1 where absent."""
    found = pc.fill_null(pc.index_in(values, value_set=value_set), -1)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)


def per_query(judged: Judgements, items: Rankings, k: int) -> PerQuery:
    """AP@k, NDCG@k, reciprocal rank (whole list) and recall@k of each ground-truth query.

    Only relevant items contribute to any of them, and only those are given; they come grouped
    by query and in rank order, so running counts are cumulative sums within a group."""
    n_q = len(judged.queries)
    n_rel = np.bincount(judged.query[judged.relevance > 0], minlength=n_q)
    query, position = items.query, items.position
    first = np.zeros(n_q, dtype=np.int64)
    is_first = np.concatenate(([True], query[1:] != query[:-1]))[: len(query)]
    first[query[is_first]] = position[is_first]
    rr = _ratio(np.ones(n_q), first)
    in_k = position <= k
    hit_query, hit_position = query[in_k], position[in_k].astype(np.float64)
    precision = _running_count(np.ones(len(hit_query), dtype=np.bool_), hit_query) / hit_position
    ap = _ratio(np.bincount(hit_query, weights=precision, minlength=n_q), np.minimum(n_rel, k))
    recall = _ratio(np.bincount(hit_query, minlength=n_q), n_rel)
    gain = items.relevance[in_k] / np.log2(hit_position + 1.0)
    dcg = np.bincount(hit_query, weights=gain, minlength=n_q)
    ndcg = _ratio(dcg, _ideal_dcg(judged, k, n_q))
    return PerQuery(ap=ap, ndcg=ndcg, rr=rr, recall=recall, judged=n_rel > 0)


def _running_count(flag: npt.NDArray[np.bool_], group: IntArray) -> FloatArray:
    """Within each run of equal ``group`` values (items are grouped by query), the count of
    true ``flag`` values so far, inclusive."""
    total = np.cumsum(flag, dtype=np.int64)
    if not len(group):
        return total.astype(np.float64)
    start = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    before = np.concatenate(([0], total[start[1:] - 1]))
    counts = np.diff(np.append(start, len(group)))
    running: FloatArray = (total - np.repeat(before, counts)).astype(np.float64)
    return running


def _ideal_dcg(judged: Judgements, k: int, n_q: int) -> FloatArray:
    positive = np.flatnonzero(judged.relevance > 0)
    order = positive[np.lexsort((-judged.relevance[positive], judged.query[positive]))]
    query = judged.query[order]
    rank = _running_count(np.ones(len(query), dtype=np.bool_), query)
    gain = np.where(rank <= k, judged.relevance[order] / np.log2(rank + 1.0), 0.0)
    ideal: FloatArray = np.bincount(query, weights=gain, minlength=n_q).astype(np.float64)
    return ideal


def _ratio(numerator: npt.NDArray[Any], denominator: npt.NDArray[Any]) -> FloatArray:
    safe = np.where(denominator > 0, denominator, 1).astype(np.float64)
    ratio: FloatArray = np.where(denominator > 0, numerator / safe, 0.0)
    return ratio


def summary_metrics(scores: PerQuery, k: int) -> dict[str, MetricValue]:
    """Means over the queries with a relevant document (the others are counted, not averaged)."""
    judged = scores.judged
    n = int(np.count_nonzero(judged))
    metrics: dict[str, MetricValue] = {}
    for name, values in (
        (f"map@{k}", scores.ap),
        (f"ndcg@{k}", scores.ndcg),
        ("mrr", scores.rr),
        (f"recall@{k}", scores.recall),
    ):
        metrics[name] = float(np.mean(values[judged])) if n else 0.0
    metrics["n_queries"] = float(len(judged))
    metrics["n_queries_without_relevant"] = float(len(judged) - n)
    return metrics


def _per_query_csv(queries: pa.Array, scores: PerQuery, k: int) -> bytes:
    table = pa.table(
        {
            "query_id": queries,
            f"ap@{k}": scores.ap,
            f"ndcg@{k}": scores.ndcg,
            "rr": scores.rr,
            f"recall@{k}": scores.recall,
            "has_relevant": scores.judged,
        }
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return bytes(sink.getvalue().to_pybytes())


@register("ranking_map", version="1.0.0", task_type="ranking", description=DESCRIPTION,
          expected_files=EXPECTED_FILES, primary_metric="map", params=RankingParams)  # fmt: skip
def ranking_map(ws: Workspace, params: RankingParams) -> Result:
    clock = [time.perf_counter()]
    judged, all_docs = read_judgements(ws)
    queries, lists = read_rankings(ws)
    items = rank_items(judged, all_docs, queries, lists)
    clock.append(time.perf_counter())
    scores = per_query(judged, items, params.k)
    metrics = summary_metrics(scores, params.k)
    clock.append(time.perf_counter())
    artifacts = {}
    if params.per_query:
        path = ws.root / PER_QUERY_PATH
        atomic_write_bytes(path, _per_query_csv(judged.queries, scores, params.k))
        artifacts["per_query"] = make_artifact(
            ws.root, path, media_type="text/csv", description="each query's AP, NDCG, RR, recall"
        )
    clock.append(time.perf_counter())
    value, ndcg = metrics[f"map@{params.k}"], metrics[f"ndcg@{params.k}"]
    assert isinstance(value, float)
    steps = zip(("read_s", "metrics_s", "artifacts_s"), np.diff(clock).tolist(), strict=True)
    return Result(
        summary={"map": value, "score": value, f"ndcg@{params.k}": ndcg},
        metrics={"map": value, **metrics},
        artifacts=artifacts,
        timing=dict(steps),
    )
