"""semantic_segmentation on hand-made masks (values worked out by hand), against the direct numpy
definition (``bench.bench_segmentation.reference``) and scikit-learn's ``jaccard_score`` on seeded
random and hypothesis-generated masks, in every PNG kind it reads; bad inputs are standard errors
naming the file."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from sklearn.metrics import jaccard_score

from bench.bench_segmentation import reference
from services.scorer.builtin.segmentation import semantic_segmentation
from shared.errors import AutoscorerError, ErrorCode, Fault
from shared.models import Result
from shared.workspace import Workspace

Pairs = list[tuple[np.ndarray, np.ndarray]]


def save(path: Path, mask: np.ndarray, kind: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "L":
        Image.fromarray(mask.astype(np.uint8), mode="L").save(path)
    elif kind == "I;16":
        Image.fromarray(mask.astype(np.uint16)).save(path)
    elif kind == "P":
        size = (mask.shape[1], mask.shape[0])
        image = Image.frombytes("P", size, mask.astype(np.uint8).tobytes())
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        image.save(path)
    else:
        raise AssertionError(kind)


def workspace(root: Path, pairs: Pairs, kind: str = "L", pred: str | None = None) -> Workspace:
    for i, (gt, pr) in enumerate(pairs):
        save(root / "input" / "gt" / f"img{i:03d}.png", gt, kind)
        save(root / "output" / "pred" / f"img{i:03d}.png", pr, pred or kind)
    return Workspace.at(root)


def score(
    root: Path, pairs: Pairs, kind: str = "L", pred: str | None = None, **params: object
) -> Result:
    return semantic_segmentation.score(workspace(root, pairs, kind, pred), params)


def check(
    result: Result, pairs: list[tuple[np.ndarray, np.ndarray]], k: int, ignore: int | None
) -> None:
    want = reference(pairs, k, ignore)
    for name, value in want.items():
        assert abs(result.metrics[name] - value) <= 1e-9, name  # type: ignore[operator]
    truth = np.concatenate([g.ravel() for g, _ in pairs]).astype(np.int64)
    guess = np.concatenate([p.ravel() for _, p in pairs]).astype(np.int64)
    valid = truth != ignore if ignore is not None else np.ones(len(truth), dtype=bool)
    present = sorted(set(truth[valid].tolist()) | set(guess[valid].tolist()))
    per_class = jaccard_score(truth[valid], guess[valid], labels=present, average=None)
    got = result.metrics["iou_per_class"]
    assert isinstance(got, dict)
    assert sorted(int(c) for c in got) == present
    for c, value in zip(present, per_class, strict=True):
        assert abs(got[str(c)] - value) <= 1e-9
    assert result.summary["score"] == result.metrics["mIoU"]


def test_hand_made_masks(tmp_path: Path) -> None:
    """Two 2x4 images, classes 0..3, 255 ignored. Class 3 appears nowhere: left out."""
    gt1 = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pr1 = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
    gt2 = np.array([[2, 2, 2, 2], [255, 255, 0, 0]])
    pr2 = np.array([[2, 2, 0, 2], [1, 1, 0, 0]])
    result = score(tmp_path, [(gt1, pr1), (gt2, pr2)], num_classes=4)
    # valid pixels: 7 + 6 = 13. class 0: gt 6, pred 6, tp 5 -> IoU 5/7, Dice 10/12
    # class 1: gt 3, pred 3 (the pred 1s of image 2 sit on ignored pixels), tp 2 -> IoU 2/4
    # class 2: gt 4, pred 4 (one on gt 1, three on gt 2), tp 3 -> IoU 3/5, Dice 6/8
    iou = {"0": 5 / 7, "1": 2 / 4, "2": 3 / 5}
    assert result.metrics["iou_per_class"] == pytest.approx(iou, abs=1e-15)
    assert result.metrics["mIoU"] == pytest.approx(sum(iou.values()) / 3, abs=1e-15)
    assert result.metrics["dice_per_class"] == pytest.approx(
        {"0": 10 / 12, "1": 4 / 6, "2": 6 / 8}, abs=1e-15
    )
    assert result.metrics["pixel_accuracy"] == pytest.approx(10 / 13, abs=1e-15)
    assert result.metrics["accuracy_per_class"] == pytest.approx(
        {"0": 5 / 6, "1": 2 / 3, "2": 3 / 4}, abs=1e-15
    )
    assert result.metrics["n_ignored_pixels"] == 3
    assert result.metrics["n_classes_present"] == 3
    assert result.metrics["n_images"] == 2


def test_class_only_in_prediction_counts_as_zero(tmp_path: Path) -> None:
    gt = np.zeros((3, 3), dtype=np.uint8)
    pred = gt.copy()
    pred[0, 0] = 1
    result = score(tmp_path, [(gt, pred)], num_classes=2, class_names=["sky", "road"])
    assert result.metrics["iou_per_class"] == {"sky": 8 / 9, "road": 0.0}
    assert result.metrics["accuracy_per_class"] == {"sky": 8 / 9}  # road has no gt pixel
    assert result.metrics["mIoU"] == pytest.approx((8 / 9) / 2, abs=1e-15)


def random_pairs(
    rng: np.random.Generator, n: int, k: int, ignore: int | None, high: int = 256
) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for _ in range(n):
        shape = tuple(int(v) for v in rng.integers(1, 40, size=2))
        gt = rng.integers(0, k, size=shape)
        pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, k, size=shape))
        if ignore is not None:
            gt[rng.random(shape) < 0.1] = ignore
        pairs.append((gt, pred))
    return pairs


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("kind", "pred_kind", "k", "ignore"),
    [
        ("L", None, 5, 255),
        ("L", None, 21, None),
        ("P", None, 7, 200),
        ("I;16", None, 300, 65535),
        ("I;16", None, 3, 1000),
        ("L", "I;16", 12, 255),
    ],
)
def test_seeded_random_matches_references(
    tmp_path: Path, seed: int, kind: str, pred_kind: str | None, k: int, ignore: int | None
) -> None:
    pairs = random_pairs(np.random.default_rng(seed), 6, k, ignore)
    result = score(tmp_path, pairs, kind, pred_kind, num_classes=k, ignore_index=ignore)
    check(result, pairs, k, ignore)


@st.composite
def mask_sets(draw: st.DrawFn) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    k = draw(st.integers(1, 6))
    pairs = []
    for _ in range(draw(st.integers(1, 3))):
        shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9))
        gt = draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from([*range(k), 255])))
        pred = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, k - 1)))
        pairs.append((gt, pred))
    return pairs, k


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=mask_sets())
def test_property_matches_reference(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[list[tuple[np.ndarray, np.ndarray]], int]
) -> None:
    pairs, k = case
    root = tmp_path_factory.mktemp("seg")
    if all((gt == 255).all() for gt, _ in pairs):
        with pytest.raises(AutoscorerError) as info:
            score(root, pairs, num_classes=k)
        assert info.value.code == ErrorCode.BAD_FORMAT
        return
    result = score(root, pairs, num_classes=k)
    check(result, pairs, k, 255)
    assert 0.0 <= result.metrics["mIoU"] <= 1.0  # type: ignore[operator]


def error_of(root: Path, **params: object) -> AutoscorerError:
    with pytest.raises(AutoscorerError) as info:
        semantic_segmentation.score(Workspace.at(root), {"num_classes": 3, **params})
    return info.value


GT0 = np.array([[0, 1], [2, 255]])


def test_missing_directories(tmp_path: Path) -> None:
    assert error_of(tmp_path).code == ErrorCode.MISSING_FILE
    save(tmp_path / "input" / "gt" / "a.png", GT0)
    error = error_of(tmp_path)
    assert (error.code, error.details["file"], error.fault) == (
        ErrorCode.MISSING_FILE,
        "output/pred",
        Fault.PARTICIPANT,
    )


def test_missing_and_extra_predictions(tmp_path: Path) -> None:
    workspace(tmp_path, [(GT0, GT0 % 3), (GT0, GT0 % 3)])
    (tmp_path / "output" / "pred" / "img001.png").rename(tmp_path / "output" / "pred" / "x.png")
    error = error_of(tmp_path)
    assert error.code == ErrorCode.MISMATCH
    assert error.details["missing"] == ["img001.png"]
    assert error.details["extra"] == ["x.png"]


def test_empty_ground_truth_directory(tmp_path: Path) -> None:
    (tmp_path / "input" / "gt").mkdir(parents=True)
    (tmp_path / "output" / "pred").mkdir(parents=True)
    error = error_of(tmp_path)
    assert (error.code, error.fault) == (ErrorCode.BAD_FORMAT, Fault.ORGANISER)


@pytest.mark.parametrize(
    ("gt", "pred", "kind", "file", "values"),
    [
        (np.array([[0, 7]]), np.array([[0, 1]]), "L", "input/gt/img000.png", [7]),
        (np.array([[0, 1]]), np.array([[0, 255]]), "L", "output/pred/img000.png", [255]),
        (np.array([[0, 1]]), np.array([[3, 1]]), "I;16", "output/pred/img000.png", [3]),
        (np.array([[0, 900]]), np.array([[0, 1]]), "I;16", "input/gt/img000.png", [900]),
    ],
)
def test_labels_out_of_range(
    tmp_path: Path, gt: np.ndarray, pred: np.ndarray, kind: str, file: str, values: list[int]
) -> None:
    workspace(tmp_path, [(gt, pred)], kind)
    error = error_of(tmp_path)
    assert (error.code, error.details["file"], error.details["values"]) == (
        ErrorCode.BAD_FORMAT,
        file,
        values,
    )


def test_size_mismatch(tmp_path: Path) -> None:
    workspace(tmp_path, [(GT0, np.zeros((2, 3), dtype=np.uint8))])
    error = error_of(tmp_path)
    assert (error.code, error.details["file"]) == (ErrorCode.MISMATCH, "output/pred/img000.png")
    assert (error.details["size"], error.details["expected"]) == ([3, 2], [2, 2])


@pytest.mark.parametrize("content", ["rgb", "garbage", "truncated", "jpeg", "huge"])
def test_unreadable_or_wrong_kind_of_image(tmp_path: Path, content: str) -> None:
    workspace(tmp_path, [(GT0, GT0 % 3)])
    path = tmp_path / "output" / "pred" / "img000.png"
    if content == "rgb":
        Image.new("RGB", (2, 2)).save(path)
    elif content == "garbage":
        path.write_bytes(b"not a png at all")
    elif content == "truncated":
        save(path, np.random.default_rng(0).integers(0, 3, size=(64, 64)))
        path.write_bytes(path.read_bytes()[:600])
    elif content == "huge":  # a header declaring 10000 x 10000 pixels: refused undecoded
        header = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 0, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header)
    else:
        Image.new("L", (2, 2)).save(path, format="JPEG")
    error = error_of(tmp_path)
    assert error.code in {ErrorCode.BAD_FORMAT, ErrorCode.PARSE_ERROR}
    assert error.details["file"] == "output/pred/img000.png"
    assert error.fault == Fault.PARTICIPANT


def test_every_pixel_ignored(tmp_path: Path) -> None:
    workspace(tmp_path, [(np.full((2, 2), 255), np.zeros((2, 2)))])
    assert error_of(tmp_path).code == ErrorCode.BAD_FORMAT


@pytest.mark.parametrize(
    "params",
    [
        {"num_classes": 0},
        {"num_classes": 3, "ignore_index": 2},
        {"num_classes": 3, "class_names": ["a", "b"]},
        {"num_classes": 2, "class_names": ["a", "a"]},
        {"num_classes": 3, "threshold": 1},
        {},
    ],
)
def test_bad_params(tmp_path: Path, params: dict[str, object]) -> None:
    workspace(tmp_path, [(GT0, GT0 % 3)])
    with pytest.raises(AutoscorerError) as info:
        semantic_segmentation.score(Workspace.at(tmp_path), params)
    assert info.value.code == ErrorCode.BAD_PARAMS


def test_example_workspace_runs_and_scores(tmp_path: Path) -> None:
    """The example's participant program writes PNG masks (standard library + numpy) that the
    scorer reads, with the params of its meta.json."""
    root = tmp_path / "ws"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "segmentation", root)
    subprocess.run([sys.executable, "submission/predict.py"], cwd=root, check=True, timeout=60)
    params = json.loads((root / "meta.json").read_text())["params"]
    result = semantic_segmentation.score(Workspace.at(root), params)
    assert 0.5 < result.summary["score"] < 1.0
