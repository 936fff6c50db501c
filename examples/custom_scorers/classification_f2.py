"""An example custom scorer: macro F2 (recall weighted four times as much as precision).

Load it at run time, no restart needed:

    autoscorer score WS --plugin examples/custom_scorers --scorer classification_f2
    autoscorer scorers load examples/custom_scorers --watch     # reloads on every save

It reuses the built-in CSV reader, so bad files get the same error codes as the built-ins
(MISSING_FILE, BAD_FORMAT, PARSE_ERROR, MISMATCH). The value equals
``sklearn.metrics.fbeta_score(y_true, y_pred, beta=2, average="macro")``.
"""

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from services.scorer.builtin.tabular import read_pair
from shared.models import Result
from shared.scoring import register
from shared.workspace import Workspace


class F2Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(2.0, gt=0, description="weight of recall against precision")


@register(
    "classification_f2",
    version="1.0.0",
    task_type="classification",
    description="macro F-beta (beta=2 by default) over the union of labels",
    expected_files=("input/gt.csv", "output/pred.csv"),
    primary_metric="f2_macro",
    params=F2Params,
)
def classification_f2(ws: Workspace, params: F2Params) -> Result:
    pair = read_pair(ws, [("id", "label")])
    y_true = np.asarray(pair.gt.values.to_numpy(zero_copy_only=False), dtype=object)
    y_pred = pair.aligned(np.asarray(pair.pred.values.to_numpy(zero_copy_only=False), dtype=object))
    labels, codes = np.unique(np.concatenate([y_true, y_pred]).astype(str), return_inverse=True)
    true_codes, pred_codes = codes[: len(y_true)], codes[len(y_true) :]
    n = len(labels)
    tp = np.bincount(true_codes[true_codes == pred_codes], minlength=n).astype(float)
    true_sum = np.bincount(true_codes, minlength=n).astype(float)
    pred_sum = np.bincount(pred_codes, minlength=n).astype(float)
    beta2 = params.beta**2
    denom = beta2 * true_sum + pred_sum
    scores = np.divide((1 + beta2) * tp, denom, out=np.zeros(n), where=denom != 0)
    f2 = float(np.mean(scores))
    return Result(
        summary={"f2_macro": f2},
        metrics={
            "f2_macro": f2,
            "f2_per_class": dict(zip(labels.tolist(), scores.tolist(), strict=True)),
        },
    )
