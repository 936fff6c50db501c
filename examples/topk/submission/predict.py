"""Participant program: scores each of ten classes by minus the distance to its centroid
(model.json); top_k_accuracy only ranks the scores, so they need not be probabilities.

Writes output/pred.csv: id and one score column per class.
"""

import csv
import json
from pathlib import Path

model = json.loads((Path(__file__).resolve().parent / "model.json").read_text())
Path("output").mkdir(exist_ok=True)
with (
    open("input/data/features.csv", newline="", encoding="utf-8") as source,
    open("output/pred.csv", "w", newline="", encoding="utf-8") as target,
):
    reader, writer = csv.DictReader(source), csv.writer(target, lineterminator="\n")
    writer.writerow(["id", *model["classes"]])
    for record in reader:
        point = (float(record["x0"]), float(record["x1"]))
        writer.writerow(
            [record["id"]]
            + [
                round(-(((point[0] - cx) ** 2 + (point[1] - cy) ** 2) ** 0.5), 6)
                for cx, cy in model["centroids"]
            ]
        )
print("scored every class")
