"""Instance masks for ``iouType="segm"``: COCO segmentations -> validated compressed RLEs, their
areas, and the mask IoU of candidate pairs.

A segmentation is a compressed RLE ``{"size": [h, w], "counts": "<string>"}``, an uncompressed
RLE (``counts`` a list of run lengths, as COCO stores crowd regions) or polygons
``[[x1, y1, x2, y2, ...], ...]`` (which need the image's ``height`` and ``width``). The last two
are converted with ``pycocotools.mask`` exactly as ``COCO.annToRLE`` does. Every compressed
string is checked before pycocotools' C code sees it (that code trusts its input: a malformed
string would make it read or write out of bounds): the strings of a file are decoded together,
vectorised, into run lengths, which must be non-negative and add up to ``h * w``; the mask's area
(the sum of the odd runs, as ``maskUtils.area``) falls out of the same pass. IoU is pycocotools'
own ``maskUtils.iou``, called once per (image, category) with detections and ground truths, as
``COCOeval.computeIoU`` does, so the values are bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from services.scorer.builtin.coco.data import BoolArray, FloatArray, IntArray
from services.scorer.builtin.coco.pairs import PairIou

Rle = dict[str, Any]
MAX_PIXELS = (1 << 31) - 1  # pycocotools counts runs in 32-bit unsigned integers
MAX_DIGITS = 7  # 5 bits per character: 7 hold any run (or run difference) below 2^31


@dataclass(frozen=True, slots=True)
class MaskSet:
    """Compressed RLEs of the ground truth and of the detections, each in file order."""

    gt: list[Rle]
    dt: list[Rle]

    def pair_iou(
        self,
        det_source: IntArray,
        det_group: IntArray,
        gt_source: IntArray,
        gt_group: IntArray,
        gt_crowd: BoolArray,
    ) -> PairIou:
        """Mask IoU of (ranked detection, sorted ground truth) pairs. Both sides are sorted by
        group; one ``maskUtils.iou`` matrix per group that has both is computed up front."""
        starts = np.flatnonzero(np.concatenate(([True], det_group[1:] != det_group[:-1])))
        starts = starts[: len(det_group)]
        ends = np.append(starts[1:], len(det_group))
        gt_lo = np.searchsorted(gt_group, det_group[starts], side="left")
        gt_hi = np.searchsorted(gt_group, det_group[starts], side="right")
        n_gt = gt_hi - gt_lo
        sizes = (ends - starts) * n_gt
        offsets = np.cumsum(sizes) - sizes
        table = np.zeros(int(sizes.sum()), dtype=np.float64)
        for g in np.flatnonzero(n_gt).tolist():
            dts = [self.dt[i] for i in det_source[starts[g] : ends[g]].tolist()]
            gts = [self.gt[i] for i in gt_source[gt_lo[g] : gt_hi[g]].tolist()]
            crowd = gt_crowd[gt_lo[g] : gt_hi[g]].astype(np.uint8).tolist()
            block = np.asarray(mask_utils.iou(dts, gts, crowd), dtype=np.float64)
            table[offsets[g] : offsets[g] + sizes[g]] = block.ravel()
        group_of = np.repeat(np.arange(len(starts)), ends - starts)

        def iou_of(det: IntArray, gt: IntArray) -> FloatArray:
            g = group_of[det]
            at = offsets[g] + (det - starts[g]) * n_gt[g] + (gt - gt_lo[g])
            values: FloatArray = table[at]
            return values

        return iou_of


Problem = Callable[[int, str], None]


def to_rles(
    segmentations: list[Any], image_size: list[tuple[int, int] | None], problem: Problem
) -> list[Rle]:
    """Compressed RLEs (``counts`` as given, str or bytes) for each segmentation; ``problem(i,
    reason)`` is told about each bad one (and an empty placeholder is returned for it)."""
    rles: list[Rle] = []
    single: dict[tuple[int, int], list[int]] = {}  # one-polygon masks, converted per image size
    for i, (segm, size) in enumerate(zip(segmentations, image_size, strict=True)):
        if (
            size is not None
            and isinstance(segm, list)
            and len(segm) == 1
            and not (_polygon_problem(segm))
        ):
            single.setdefault(size, []).append(i)
            rles.append(_EMPTY)
            continue
        reason, rle = _to_rle(segm, size)
        if reason:
            problem(i, reason)
        rles.append(rle)
    for (height, width), indices in single.items():  # frPyObjects takes many polygons at once
        converted = mask_utils.frPyObjects([segmentations[i][0] for i in indices], height, width)
        for i, rle in zip(indices, converted, strict=True):
            rles[i] = rle  # merging a single polygon's RLE leaves it unchanged
    return rles


_EMPTY: Rle = {"size": [0, 0], "counts": b""}


def _to_rle(segm: Any, size: tuple[int, int] | None) -> tuple[str | None, Rle]:
    if isinstance(segm, dict):
        reason = _size_problem(segm.get("size"), size)
        if reason:
            return reason, _EMPTY
        counts = segm.get("counts")
        if isinstance(counts, str | bytes):
            return None, {"size": list(segm["size"]), "counts": counts}
        if isinstance(counts, list):
            return _uncompressed(counts, segm["size"])
        return "segmentation RLE needs counts (a string, or a list of run lengths)", _EMPTY
    if isinstance(segm, list):
        if size is None:
            return "polygons need the image's height and width in the ground truth", _EMPTY
        reason = _polygon_problem(segm)
        if reason:
            return reason, _EMPTY
        rle: Rle = mask_utils.merge(mask_utils.frPyObjects(segm, size[0], size[1]))
        return None, rle
    return "segmentation must be an RLE object or a list of polygons", _EMPTY


def _size_problem(value: Any, expected: tuple[int, int] | None) -> str | None:
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
        return "segmentation size must be [height, width] (integers)"
    if value[0] < 0 or value[1] < 0 or value[0] * value[1] > MAX_PIXELS:
        return f"segmentation size {value} is negative or over {MAX_PIXELS} pixels"
    if expected is not None and tuple(value) != expected:
        return f"segmentation size {value} is not the image's [height, width] {list(expected)}"
    return None


def _uncompressed(counts: list[Any], size: list[int]) -> tuple[str | None, Rle]:
    if not all(type(c) is int and 0 <= c <= MAX_PIXELS for c in counts):
        return "RLE counts must be non-negative integers", _EMPTY
    if sum(counts) != size[0] * size[1]:
        return f"RLE counts add up to {sum(counts)}, not height * width {size[0] * size[1]}", _EMPTY
    rle: Rle = mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
    return None, rle


def _polygon_problem(polygons: list[Any]) -> str | None:
    if not polygons:
        return "segmentation has no polygon"
    for polygon in polygons:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            return "a polygon must be a flat list of at least 3 points [x1, y1, x2, y2, ...]"
        if not all(type(v) in (int, float) and math.isfinite(v) for v in polygon):
            return "polygon coordinates must be finite numbers"
    return None


def compressed_areas(rles: list[Rle]) -> tuple[FloatArray, IntArray]:
    """Each mask's area, and the indices of the RLEs whose counts string is malformed: a
    character outside ``0``..``o``, a number cut short or over 7 characters, a negative run, or
    runs that do not add up to ``h * w``. All strings are decoded at once, as ``rleFrString``
    decodes one: 5 bits per character, ``0x20`` continues a number, ``0x10`` of its last character
    is the sign, and from the fourth number on each is a difference to the number two before.
    Only byte and boolean arrays are as long as the text; the rest is per number."""
    n = len(rles)
    texts = [r["counts"].encode() if isinstance(r["counts"], str) else r["counts"] for r in rles]
    pixels = np.array([r["size"][0] * r["size"][1] for r in rles], dtype=np.int64).reshape(n)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    text_end = np.cumsum(lengths)
    chars = np.frombuffer(b"".join(texts), dtype=np.uint8) - np.uint8(48)  # wraps below "0"
    bad = np.zeros(n, dtype=np.bool_)
    _flag(bad, text_end, np.flatnonzero(chars > 63))
    chars &= 0x3F
    end = (chars & 0x20) == 0
    last = text_end[lengths > 0] - 1
    bad[np.flatnonzero(lengths > 0)[~end[last]]] = True  # the string ends inside a number
    end[last] = True
    ends = np.flatnonzero(end)
    starts = np.concatenate(([0], ends[:-1] + 1))[: len(ends)]
    digits = ends - starts + 1
    _flag(bad, text_end, ends[digits > MAX_DIGITS])
    value = (chars[starts] & 0x1F).astype(np.int64)
    for k in range(1, min(int(digits.max(initial=1)), MAX_DIGITS)):
        more = np.flatnonzero(digits > k)
        value[more] += (chars[starts[more] + k] & 0x1F).astype(np.int64) << (5 * k)
    negative = np.flatnonzero(chars[ends] & 0x10)
    value[negative] -= np.left_shift(1, 5 * np.minimum(digits[negative], MAX_DIGITS))
    numbers = np.diff(np.concatenate(([0], np.searchsorted(ends, text_end, side="left"))))
    counts, odd = _undelta(value, numbers)
    _flag(bad, np.cumsum(numbers), np.flatnonzero((counts < 0) | (counts > MAX_PIXELS)))
    bad |= _sums(counts, numbers) != pixels
    area = _sums(np.where(odd, counts, 0), numbers)
    return area.astype(np.float64), np.flatnonzero(bad)


def _flag(bad: BoolArray, ends: IntArray, positions: IntArray) -> None:
    """Mark the strings (segments ending at ``ends``, exclusive) holding these positions."""
    if len(positions):
        bad[np.searchsorted(ends, positions, side="right")] = True


def _sums(values: IntArray, numbers: IntArray) -> IntArray:
    """Per segment (``numbers`` long each, in order) the sum of ``values``."""
    total = np.concatenate(([0], np.cumsum(values)))
    bounds = np.concatenate(([0], np.cumsum(numbers)))
    sums: IntArray = total[bounds[1:]] - total[bounds[:-1]]
    return sums


def _undelta(value: IntArray, numbers: IntArray) -> tuple[IntArray, BoolArray]:
    """Run lengths from the decoded numbers of each string (``numbers`` per string):
    ``cnts[m] = x[m] + cnts[m - 2]`` for ``m > 2``, i.e. running sums along the odd positions
    from 1 and along the even ones from 2; also whether each run is at an odd position."""
    first = np.cumsum(numbers) - numbers
    index = np.arange(len(value)) - np.repeat(first, numbers)
    odd = (index & 1).astype(np.bool_)
    even_chain = ~odd & (index >= 2)
    counts = value.copy()
    for chain in (odd, even_chain):
        running = np.cumsum(np.where(chain, value, 0))
        before = np.where(first > 0, running[np.maximum(first - 1, 0)], 0) if len(value) else first
        counts = np.where(chain, running - np.repeat(before, numbers), counts)
    return counts, odd


def mask_boxes(rles: list[Rle]) -> FloatArray:
    """``maskUtils.toBbox`` of valid compressed RLEs, (N, 4) x, y, w, h."""
    if not rles:
        return np.zeros((0, 4), dtype=np.float64)
    boxes: FloatArray = np.asarray(mask_utils.toBbox(rles), dtype=np.float64).reshape(-1, 4)
    return boxes
