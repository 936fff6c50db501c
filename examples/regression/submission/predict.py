"""Participant program: a linear model fitted offline (model.json), applied to the test features.

Writes output/pred.csv with the header id,value.
"""

import csv
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    model = json.loads((HERE / "model.json").read_text())
    with open("input/data/features.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    features = np.asarray([[float(v) for v in row[1:]] for row in rows])
    values = features @ np.asarray(model["weights"]) + model["bias"]
    Path("output").mkdir(exist_ok=True)
    with open("output/pred.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "value"])
        writer.writerows((row[0], f"{value:.6f}") for row, value in zip(rows, values, strict=True))
    print(f"predicted {len(rows)} values")


if __name__ == "__main__":
    main()
