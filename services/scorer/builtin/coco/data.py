"""The arrays the evaluation works on, after parsing and validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

ImageId = int | str
CategoryId = int | str

IntArray = NDArray[np.int64]
MatchArray = NDArray[np.int32]  # ground-truth indices per detection; int32 halves the table
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Ground-truth boxes; ``image``/``category`` index into the sorted id tuples.

    Ids are sorted as pycocotools sorts them (``np.unique``), because that order decides how tied
    detection scores on different images are ranked.
    """

    image_ids: tuple[ImageId, ...]
    category_ids: tuple[CategoryId, ...]
    category_keys: tuple[str, ...]  # names when unique, else ids as strings
    image: IntArray
    category: IntArray
    boxes: FloatArray  # (G, 4) x, y, w, h
    area: FloatArray
    iscrowd: BoolArray
    id_is_zero: BoolArray  # pycocotools treats a match to an annotation with id 0 as no match

    def __len__(self) -> int:
        return len(self.image)


@dataclass(frozen=True, slots=True)
class Detections:
    """Detections in file order; their area is ``w * h`` (as pycocotools' ``loadRes`` sets it for
    boxes) unless ``area`` gives it (a mask's)."""

    image: IntArray
    category: IntArray
    boxes: FloatArray  # (D, 4)
    score: FloatArray
    area: FloatArray | None = None

    def areas(self) -> FloatArray:
        return self.boxes[:, 2] * self.boxes[:, 3] if self.area is None else self.area

    def __len__(self) -> int:
        return len(self.image)
