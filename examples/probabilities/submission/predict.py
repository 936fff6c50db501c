"""Participant program: class probabilities from a softmax over the negative squared distances
to each class's centroid (model.json, fitted offline).

Reads input/data/features.csv, writes output/pred.csv: id and one probability column per class.
"""

import csv
import json
import math
from pathlib import Path

MODEL = json.loads((Path(__file__).resolve().parent / "model.json").read_text())


def probabilities(x: list[float]) -> list[float]:
    logits = [-sum((a - b) ** 2 for a, b in zip(x, c, strict=True)) for c in MODEL["centroids"]]
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    return [w / sum(weights) for w in weights]


def main() -> None:
    with open("input/data/features.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    Path("output").mkdir(exist_ok=True)
    with open("output/pred.csv", "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["id", *MODEL["classes"]])
        out.writerows([row[0], *probabilities([float(v) for v in row[1:]])] for row in rows)
    print(f"wrote probabilities for {len(rows)} rows")


if __name__ == "__main__":
    main()
