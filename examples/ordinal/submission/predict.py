"""Participant program: a linear score (weights in model.json) rounded to a rating from 0 to 4.

Writes output/pred.csv with the header id,label.
"""

import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rate(features: dict[str, str], weights: list[float], bias: float) -> int:
    score = bias + sum(w * float(features[f"x{j}"]) for j, w in enumerate(weights))
    return min(4, max(0, round(score)))


def main() -> None:
    model = json.loads((HERE / "model.json").read_text())
    with open("input/data/features.csv", newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    lines = ["id,label"] + [
        f"{r['id']},{rate(r, model['weights'], model['bias'])}" for r in records
    ]
    Path("output").mkdir(exist_ok=True)
    Path("output/pred.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"rated {len(records)} rows")


if __name__ == "__main__":
    main()
