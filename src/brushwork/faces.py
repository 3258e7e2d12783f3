"""Face measures of a stylised portrait: is the face still a face, and are its eyes and mouth kept?

Whole-image SSIM and style loss say little about portraits: a painting can keep the background and smear the
eyes. Faces are found in the photo with scikit-image's frontal-face cascade (multi-block LBP features, trained
by OpenCV; the file ships with scikit-image: no download, no network weights), and each output is measured there:

- ``face_ssim``: SSIM (grayscale, scikit-image's defaults as :func:`brushwork.metrics.ssim`) of the eyes-and-mouth
  part of the photo's largest face box and the same part of the output;
- ``face_kept``: 1 if the cascade still finds a face in the output where the photo's face is (intersection over
  union >= 0.4), else 0; its mean over a set is the share of portraits that stay recognisable as faces.

Both are NaN where the photo has no face the cascade finds.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import skimage.data
import torch
from PIL import Image
from skimage.exposure import equalize_hist
from skimage.feature import Cascade
from skimage.metrics import structural_similarity

from .images import to_image

#: The columns :func:`face_measures` adds to an evaluation, with whether higher is better.
FACE_METRICS = {"face_ssim": True, "face_kept": True}

#: The part of a face box that holds the eyes and the mouth (fractions of its width and height).
FEATURES_BOX = (0.12, 0.22, 0.88, 0.92)

Box = tuple[int, int, int, int]  # x, y, width, height


@functools.cache
def _cascade() -> Cascade:
    return Cascade(skimage.data.lbp_frontal_face_cascade_filename())


def _gray(image: Image.Image | torch.Tensor) -> np.ndarray:
    image = to_image(image) if isinstance(image, torch.Tensor) else image
    return np.asarray(image.convert("L"))


def find_faces(image: Image.Image | torch.Tensor, min_side: float = 0.2) -> list[Box]:
    """Frontal faces at least ``min_side`` of the image's shorter side, largest first."""
    gray = equalize_hist(_gray(image))
    side = max(24, int(min(gray.shape) * min_side))
    found = _cascade().detect_multi_scale(img=gray, scale_factor=1.2, step_ratio=1, min_size=(side, side),
                                          max_size=gray.shape, min_neighbor_number=4)
    boxes = [(int(f["c"]), int(f["r"]), int(f["width"]), int(f["height"])) for f in found]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def features_region(box: Box) -> tuple[slice, slice]:
    """Rows and columns of the eyes and mouth inside a face box."""
    x, y, w, h = box
    left, top, right, bottom = FEATURES_BOX
    return slice(y + round(top * h), y + round(bottom * h)), slice(x + round(left * w), x + round(right * w))


def face_measures(output: Image.Image | torch.Tensor, content: Image.Image | torch.Tensor,
                  faces: list[Box] | None = None) -> dict[str, float]:
    """``face_ssim`` and ``face_kept`` of one output (see the module); ``faces``: the photo's, if found already."""
    faces = find_faces(content) if faces is None else faces
    if not faces:
        return {"face_ssim": math.nan, "face_kept": math.nan}
    gray_output, gray_content = _gray(output), _gray(content)
    if gray_output.shape != gray_content.shape:
        raise ValueError(f"face measures need images of one size, got {gray_output.shape} and {gray_content.shape}")
    rows, cols = features_region(faces[0])
    face_ssim = structural_similarity(gray_content[rows, cols], gray_output[rows, cols], data_range=255)
    kept = any(iou(found, faces[0]) >= 0.4 for found in find_faces(output))
    return {"face_ssim": float(face_ssim), "face_kept": float(kept)}
