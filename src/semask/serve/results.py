"""What ``POST /api/predict`` returns: the class map as a palette PNG or as run-length encoding, the legend of
the classes present with their area, and the JSON schema of it all (pydantic models, in the OpenAPI spec)."""

import base64
import io
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from semask.tools.visualize import Colour, label_image


class LegendEntry(BaseModel):
    """One class present in the class map."""

    index: int = Field(description="class index (the pixel value of the label map)")
    name: str
    color: list[int] = Field(description="(r, g, b) of the class in the palette, 0..255")
    area_percent: float = Field(description="share of the image's pixels, in %")


class LabelMap(BaseModel):
    """The (height, width) class map. ``png``: a base64 palette PNG whose pixel values are the class indices
    (and whose palette colours them); ``rle``: row-major runs, ``values[i]`` repeated ``lengths[i]`` times."""

    format: Literal["png", "rle"]
    height: int
    width: int
    png: str | None = Field(None, description="base64 PNG (format png)")
    values: list[int] | None = Field(None, description="class index of each run (format rle)")
    lengths: list[int] | None = Field(None, description="length of each run in pixels (format rle)")


class Prediction(BaseModel):
    """The result of segmenting one image."""

    label: LabelMap
    legend: list[LegendEntry] = Field(description="classes present, largest area first")
    priors: list[str] | None = Field(
        None,
        description="with priors=true: the four per-stage semantic-prior argmax maps (strides 4, 8, 16, 32) "
        "as base64 palette PNGs at the image size; null for models without semantic layers",
    )
    image: str | None = Field(None, description="with image=true: the decoded RGB image as a base64 JPEG")
    inference_ms: float = Field(description="time of the class-map inference in milliseconds")
    priors_ms: float | None = Field(None, description="time of the prior-map inference in milliseconds")


def encode_base64(image: Image.Image, kind: str = "PNG") -> str:
    """``image`` encoded as ``kind`` (PNG, JPEG), base64 text."""
    buffer = io.BytesIO()
    image.save(buffer, kind, **({"quality": 90} if kind == "JPEG" else {}))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def run_length(label: np.ndarray) -> tuple[list[int], list[int]]:
    """Row-major run-length encoding of an (H, W) integer map: ``(values, lengths)``; ``np.repeat(values,
    lengths).reshape(H, W)`` gives the map back."""
    flat = label.ravel()
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    return flat[starts].tolist(), lengths.tolist()


def label_map(label: np.ndarray, palette: Sequence[Colour], fmt: Literal["png", "rle"]) -> LabelMap:
    """(H, W) class indices as :class:`LabelMap` in format ``fmt``."""
    h, w = label.shape
    if fmt == "rle":
        values, lengths = run_length(label)
        return LabelMap(format="rle", height=h, width=w, values=values, lengths=lengths)
    return LabelMap(format="png", height=h, width=w, png=encode_base64(label_image(label, palette)))


def legend(label: np.ndarray, palette: Sequence[Colour], names: Sequence[str]) -> list[LegendEntry]:
    """The classes present in the (H, W) map, largest area first (ties: lower index first)."""
    counts = np.bincount(label.ravel(), minlength=len(names))[: len(names)]
    order = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    return [
        LegendEntry(
            index=k, name=names[k], color=list(palette[k]), area_percent=100.0 * float(counts[k]) / label.size
        )
        for k in order
    ]
