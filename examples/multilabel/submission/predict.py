"""Participant program: each tag whose feature column passes the tag's threshold (model.json).

Writes output/pred.csv with the header id,labels: the tags separated by spaces, empty for none.
"""

import csv
import json
from pathlib import Path

config = json.loads((Path(__file__).resolve().parent / "model.json").read_text())
thresholds = dict(zip(config["tags"], config["thresholds"], strict=True))
with open("input/data/features.csv", newline="", encoding="utf-8") as handle:
    table = list(csv.reader(handle))
columns = {f"x{j}": tag for j, tag in enumerate(config["tags"])}
header, body = table[0], table[1:]
predictions = []
for cells in body:
    tags = [
        columns[name]
        for name, cell in zip(header[1:], cells[1:], strict=True)
        if float(cell) > thresholds[columns[name]]
    ]
    predictions.append((cells[0], " ".join(tags)))
Path("output").mkdir(exist_ok=True)
with open("output/pred.csv", "w", newline="", encoding="utf-8") as handle:
    csv.writer(handle, lineterminator="\n").writerows([("id", "labels"), *predictions])
print(f"tagged {len(predictions)} images")
