"""``top_k_accuracy``: is the true class among the ``k`` highest-scored classes of its row?

Files as the probability scorers (``services/scorer/builtin/probabilities.py``): ground truth
``id,label``, predictions ``id,<class 1>,<class 2>,...`` with one score column per class, but the
scores may be any finite numbers (they are only ranked). Identical to scikit-learn's
``top_k_accuracy_score(y_true, scores, k=k, labels=sorted classes)``, ties included: scikit-learn
ranks a row by a stable ascending argsort read backwards, so among equal scores the class later
in sorted order ranks higher. Instead of sorting every row, the true class's rank is counted:
the classes scored higher, plus the later classes scored the same.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
from pydantic import Field

from services.scorer.builtin.probabilities import ScoreParams, Scores, read_scores
from shared.models import MetricValue, Result
from shared.scoring import register
from shared.workspace import Workspace

EXPECTED_FILES = ("input/gt.csv", "output/pred.csv")


class TopKParams(ScoreParams):
    k: int = Field(
        5,
        ge=1,
        le=1_000_000,
        description="a row is a hit if its true class is among its k best scores",
    )


def ahead(data: Scores) -> npt.NDArray[np.int64]:
    """Per row: how many classes scikit-learn ranks above the true one (its 0-based rank)."""
    scores, y_true = data.scores, data.y_true
    true_score = scores[np.arange(len(y_true)), y_true][:, None]
    later = np.arange(scores.shape[1])[None, :] > y_true[:, None]
    count: npt.NDArray[np.int64] = np.count_nonzero(scores > true_score, axis=1)
    count += np.count_nonzero((scores == true_score) & later, axis=1)
    return count


def _binary_hits(data: Scores, k: int) -> npt.NDArray[np.bool_]:
    """scikit-learn's binary case: only the second class's score, against a threshold."""
    if k >= 2:
        return np.ones(len(data.y_true), dtype=np.bool_)
    positive = data.scores[:, 1]
    threshold = 0.5 if positive.min() >= 0 and positive.max() <= 1 else 0
    return np.asarray((positive > threshold).astype(np.int64) == data.y_true)


def top_k_metrics(data: Scores, k: int) -> dict[str, MetricValue]:
    if data.scores.shape[1] == 2:
        top_k, top_1 = _binary_hits(data, k), _binary_hits(data, 1)
    else:
        rank = ahead(data)
        top_k, top_1 = rank < k, rank < 1
    return {
        "top_k_accuracy": float(np.average(top_k)),
        "top_1_accuracy": float(np.average(top_1)),
        "k": float(k),
    }


@register(
    "top_k_accuracy",
    version="1.0.0",
    task_type="classification",
    description="Top-k accuracy (param k, default 5): the fraction of rows whose true class is "
    "among the k highest scores, identical to scikit-learn's top_k_accuracy_score. Ground truth "
    "id,label; predictions id,<class>,... with one score column per class.",
    expected_files=EXPECTED_FILES,
    primary_metric="top_k_accuracy",
    params=TopKParams,
)
def top_k_accuracy(ws: Workspace, params: TopKParams) -> Result:
    started = time.perf_counter()
    data = read_scores(ws, params, probabilities=False)
    read_s = time.perf_counter() - started
    metrics = top_k_metrics(data, params.k)
    metrics["n_samples"] = float(len(data.y_true))
    metrics["n_classes"] = float(len(data.classes))
    value = metrics["top_k_accuracy"]
    assert isinstance(value, float)
    return Result(
        summary={"top_k_accuracy": value, "score": value},
        metrics=metrics,
        timing={"read_s": read_s, "metrics_s": time.perf_counter() - started - read_s},
    )
