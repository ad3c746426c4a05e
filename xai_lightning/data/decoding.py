"""Decode image and mask files into uint8 arrays, and resize them as the pipelines' first step does.

The Dataset and the image cache both decode here, so a cached sample and a fresh decode are the same pixels.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from xai_lightning.data.layout import has_mask
from xai_lightning.errors import DatasetError
from xai_lightning.data.transforms import IMAGE_INTERPOLATION, MASK_INTERPOLATION

#: What :func:`decode_resized` decodes: an RGB image or a binary mask.
KINDS = ("image", "mask")


@contextlib.contextmanager
def named_decode_errors(source: object) -> Iterator[None]:
    """Turn a decoder's error into a :class:`DatasetError` that names the file.

    A PNG whose zlib stream is broken (or a truncated JPEG) passes ``Image.verify()`` and fails only
    when its pixels are decoded, with a message that names no file: a training run would end there.
    """
    try:
        yield
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(
            f"'{source}' cannot be decoded ({type(error).__name__}: {error}): the file is damaged. Replace it "
            "(extract the dataset again; for a synthetic set, delete its folder and it is written anew)."
        ) from error


def load_image(path: str | Path | BinaryIO, source: object = None) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of an image file (a path or an open binary file; ``source`` names the latter)."""
    with named_decode_errors(source or path), Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def decode_mask(file: str | Path | BinaryIO, source: object = None) -> np.ndarray:
    """Binary uint8 mask (H, W) of a mask file (a path or an open binary file).

    MVTec masks hold 0 and 255; ``> 0`` keeps any non-zero value as defect (dividing by 255 and
    casting to an integer type would empty masks stored with values below 255).
    """
    with named_decode_errors(source or file), Image.open(file) as mask:
        return (np.asarray(mask.convert("L")) > 0).astype(np.uint8)


def load_mask(path: str | None, size_hw: tuple[int, int]) -> np.ndarray:
    """Binary uint8 mask (H, W); all zeros when ``path`` is None (``good`` images have no mask).

    >>> load_mask(None, (2, 3))
    array([[0, 0, 0],
           [0, 0, 0]], dtype=uint8)
    """
    if not has_mask(path):
        return np.zeros(size_hw, dtype=np.uint8)
    return decode_mask(path)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8, resized as the pipelines' ``A.Resize`` does (which skips same-size input)."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=IMAGE_INTERPOLATION)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8 in {0, 1}: nearest-neighbour resizing of a binary mask stays binary.

    >>> resize_mask(np.eye(2, dtype=np.uint8), 4)
    array([[1, 1, 0, 0],
           [1, 1, 0, 0],
           [0, 0, 1, 1],
           [0, 0, 1, 1]], dtype=uint8)
    """
    if mask.shape[:2] == (size, size):
        return mask
    return cv2.resize(mask, (size, size), interpolation=MASK_INTERPOLATION)


def decode_resized(kind: str, data: bytes, size: int, source: object = "file") -> np.ndarray:
    """The bytes of an image or mask file (``kind``: ``image`` or ``mask``), decoded and resized to ``size``².

    ``source`` (the file's path) is what a decoding error names.
    """
    if kind == "image":
        return resize_image(load_image(io.BytesIO(data), source), size)
    if kind == "mask":
        return resize_mask(decode_mask(io.BytesIO(data), source), size)
    raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
