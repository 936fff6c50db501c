"""Participant program: nearest-centroid classifier.

Reads the test features from input/data/features.csv (run from the workspace root, /workspace in
a container), applies the centroids it learned offline (model.json beside this file), and writes
output/pred.csv with the header id,label. It never reads input/gt.csv: the platform hides it.
"""

import csv
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    model = json.loads((HERE / "model.json").read_text())
    centroids = np.asarray(model["centroids"], dtype=float)
    with open("input/data/features.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    ids = [row[0] for row in rows]
    features = np.asarray([[float(v) for v in row[1:]] for row in rows])
    distances = ((features[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    labels = [model["classes"][k] for k in distances.argmin(axis=1)]
    Path("output").mkdir(exist_ok=True)
    with open("output/pred.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "label"])
        writer.writerows(zip(ids, labels, strict=True))
    print(f"predicted {len(ids)} rows with {len(centroids)} centroids")


if __name__ == "__main__":
    main()
