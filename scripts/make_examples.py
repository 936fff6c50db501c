"""Regenerate the example workspaces' data (seeded, so the committed files are reproducible).

Each example has hidden test data in input/ (features for the participant, gt.* for scoring only)
and a participant program in submission/ with a model "trained" offline on separate data.
Run: .venv/bin/python scripts/make_examples.py
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent / "examples"


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _blobs(
    rng: np.random.Generator, centres: np.ndarray, n: int, spread: float
) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, len(centres), size=n)
    points = centres[labels] + rng.normal(0, spread, size=(n, centres.shape[1]))
    return points, labels


def classification(name: str, classes: list[str], dims: int, spread: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-3, 3, size=(len(classes), dims))
    train_x, train_y = _blobs(rng, centres, 600, spread)
    model = {
        "classes": classes,
        "centroids": [
            train_x[train_y == k].mean(axis=0).round(6).tolist() for k in range(len(classes))
        ],
    }
    test_x, test_y = _blobs(rng, centres, 120, spread)
    ids = [f"s{i:04d}" for i in rng.permutation(len(test_x))]
    ws = ROOT / name
    features = [[ids[i], *np.round(test_x[i], 5).tolist()] for i in range(len(ids))]
    _write_csv(
        ws / "input" / "data" / "features.csv", ["id"] + [f"x{j}" for j in range(dims)], features
    )
    gt = [[ids[i], classes[test_y[i]]] for i in range(len(ids))]
    gt.sort(key=lambda r: str(r[0]))
    _write_csv(ws / "input" / "gt.csv", ["id", "label"], gt)
    (ws / "submission").mkdir(parents=True, exist_ok=True)
    (ws / "submission" / "model.json").write_text(json.dumps(model, indent=1) + "\n")


def regression(seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights, bias = np.array([1.5, -2.0, 0.5]), 3.0
    train_x = rng.normal(size=(500, 3))
    train_y = train_x @ weights + bias + rng.normal(0, 0.3, 500)
    design = np.hstack([train_x, np.ones((500, 1))])
    fitted = np.linalg.lstsq(design, train_y, rcond=None)[0]
    test_x = rng.normal(size=(100, 3))
    test_y = test_x @ weights + bias + rng.normal(0, 0.3, 100)
    ws = ROOT / "regression"
    ids = [f"r{i:03d}" for i in range(100)]
    _write_csv(
        ws / "input" / "data" / "features.csv",
        ["id", "x0", "x1", "x2"],
        [[ids[i], *np.round(test_x[i], 5).tolist()] for i in range(100)],
    )
    _write_csv(
        ws / "input" / "gt.csv",
        ["id", "value"],
        [[ids[i], round(float(test_y[i]), 5)] for i in range(100)],
    )
    (ws / "submission").mkdir(parents=True, exist_ok=True)
    model = {"weights": fitted[:3].round(6).tolist(), "bias": round(float(fitted[3]), 6)}
    (ws / "submission" / "model.json").write_text(json.dumps(model, indent=1) + "\n")


def detection(seed: int) -> None:
    """Dark 64x64 images with bright rectangles; the brightness level is the category."""
    rng = np.random.default_rng(seed)
    ws = ROOT / "detection"
    categories = [{"id": 1, "name": "box"}, {"id": 2, "name": "plate"}]
    levels = {1: 120, 2: 220}
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    (ws / "input" / "data").mkdir(parents=True, exist_ok=True)
    for index in range(12):
        image = rng.integers(0, 40, size=(64, 64)).astype(np.uint8)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, 4))):
            w, h = int(rng.integers(5, 24)), int(rng.integers(5, 24))
            x, y = int(rng.integers(0, 64 - w)), int(rng.integers(0, 64 - h))
            if any(
                x < px + pw + 1 and px < x + w + 1 and y < py + ph + 1 and py < y + h + 1
                for px, py, pw, ph in placed
            ):
                continue
            placed.append((x, y, w, h))
            category = int(rng.integers(1, 3))
            image[y : y + h, x : x + w] = levels[category] + rng.integers(-10, 10, size=(h, w))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        np.save(ws / "input" / "data" / f"img_{index + 1:03d}.npy", image)
        images.append(
            {"id": index + 1, "file_name": f"img_{index + 1:03d}.npy", "width": 64, "height": 64}
        )
    (ws / "input" / "data" / "images.json").write_text(json.dumps(images, indent=1) + "\n")
    gt = {"images": images, "annotations": annotations, "categories": categories}
    (ws / "input" / "gt.json").write_text(json.dumps(gt, indent=1) + "\n")


# Examples of the probability, top-k, ordinal, multilabel and RMSLE scorers: the participant
# programs (submission/predict.py) are written by hand, stdlib only; this writes the rest.
DOCKERFILE = ROOT / "ranking" / "submission" / "Dockerfile"  # stdlib-only participant image


def _workspace(
    name: str, scorer: str, task_type: str, params: dict[str, object], model: dict[str, object]
) -> Path:
    ws = ROOT / name
    (ws / "submission").mkdir(parents=True, exist_ok=True)
    meta = {
        "job_id": f"example-{name}",
        "task_type": task_type,
        "scorer": scorer,
        "params": params,
        "time_limit": 60,
        "resources": {"cpu": 1, "memory": "512Mi", "gpus": 0},
        "container": {
            "image": f"autoscorer-examples/{name}:1",
            "cmd": ["python3", "submission/predict.py"],
        },
    }
    (ws / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (ws / "submission" / "model.json").write_text(json.dumps(model, indent=1) + "\n")
    shutil.copyfile(DOCKERFILE, ws / "submission" / "Dockerfile")
    return ws


def _features(ws: Path, ids: list[str], x: np.ndarray) -> None:
    header = ["id"] + [f"x{j}" for j in range(x.shape[1])]
    _write_csv(
        ws / "input" / "data" / "features.csv",
        header,
        [[ids[i], *np.round(x[i], 4).tolist()] for i in range(len(ids))],
    )


def centroid_classes(
    name: str, scorer: str, params: dict[str, object], *, n_classes: int, spread: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    classes = [f"class_{chr(ord('a') + k)}" for k in range(n_classes)]
    centres = rng.uniform(-3, 3, size=(n_classes, 2))
    train_y = rng.integers(0, n_classes, 600)
    train_x = centres[train_y] + rng.normal(0, spread, (600, 2))
    centroids = [train_x[train_y == k].mean(axis=0).round(4).tolist() for k in range(n_classes)]
    ws = _workspace(
        name, scorer, "classification", params, {"classes": classes, "centroids": centroids}
    )
    test_y = rng.integers(0, n_classes, 120)
    test_x = centres[test_y] + rng.normal(0, spread, (120, 2))
    ids = [f"s{i:04d}" for i in range(120)]
    _features(ws, ids, test_x)
    _write_csv(
        ws / "input" / "gt.csv", ["id", "label"], [[ids[i], classes[test_y[i]]] for i in range(120)]
    )


def ordinal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = np.array([0.8, 0.5, -0.4])
    x = rng.normal(size=(120, 3))
    rating = np.clip(np.round(2 + x @ weights + rng.normal(0, 0.5, 120)), 0, 4).astype(int)
    model = {"weights": (weights + rng.normal(0, 0.1, 3)).round(3).tolist(), "bias": 2.0}
    ws = _workspace("ordinal", "quadratic_weighted_kappa", "ordinal", {}, model)
    ids = [f"r{i:03d}" for i in range(120)]
    _features(ws, ids, x)
    _write_csv(
        ws / "input" / "gt.csv", ["id", "label"], [[ids[i], int(rating[i])] for i in range(120)]
    )


def multilabel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tags = ["beach", "city", "forest", "night", "people"]
    truth = rng.random((100, len(tags))) < [0.3, 0.4, 0.25, 0.2, 0.5]
    x = truth + rng.normal(0, 0.35, truth.shape)
    model = {"tags": tags, "thresholds": [0.5] * len(tags)}
    ws = _workspace("multilabel", "multilabel_f1_micro", "multilabel", {}, model)
    ids = [f"img{i:03d}" for i in range(100)]
    _features(ws, ids, x)
    _write_csv(
        ws / "input" / "gt.csv",
        ["id", "labels"],
        [
            [ids[i], " ".join(t for t, on in zip(tags, truth[i], strict=True) if on)]
            for i in range(100)
        ],
    )


def rmsle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = np.array([0.6, -0.3])
    x = rng.normal(size=(100, 2))
    price = np.exp(4 + x @ weights + rng.normal(0, 0.2, 100))
    model = {"weights": (weights + rng.normal(0, 0.05, 2)).round(3).tolist(), "bias": 4.0}
    ws = _workspace("rmsle", "regression_rmsle", "regression", {}, model)
    ids = [f"h{i:03d}" for i in range(100)]
    _features(ws, ids, x)
    _write_csv(
        ws / "input" / "gt.csv",
        ["id", "value"],
        [[ids[i], round(float(price[i]), 2)] for i in range(100)],
    )


def main() -> None:
    classification("classification", ["cat", "dog", "bird", "fish"], 2, 1.3, seed=7)
    classification("classification-acc", ["setosa", "versicolor", "virginica"], 4, 1.6, seed=11)
    regression(seed=5)
    detection(seed=3)
    centroid_classes("probabilities", "log_loss", {}, n_classes=3, spread=1.4, seed=21)
    centroid_classes("topk", "top_k_accuracy", {"k": 3}, n_classes=10, spread=1.2, seed=22)
    ordinal(seed=23)
    multilabel(seed=24)
    rmsle(seed=25)


if __name__ == "__main__":
    main()
