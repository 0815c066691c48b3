"""The ``semask serve`` web app (FastAPI): one static page and a JSON API.

Routes: ``GET /`` (the page), ``POST /api/predict`` (segment one uploaded image), ``GET /api/model`` (what the
model is), ``GET /healthz``, and FastAPI's ``/openapi.json`` and ``/docs``. Images are decoded as ``semask
predict`` decodes them (:func:`semask.data.io.read_image`: EXIF orientation applied; grayscale, 16-bit, CMYK,
palette images converted to 8-bit RGB), one image at a time (:class:`~semask.serve.limits.InferenceGate`).
"""

import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse
from PIL import Image
from pydantic import BaseModel, Field

from semask.data.io import image_size, read_image
from semask.engine.inference import InferenceCfg, Predictor
from semask.errors import DataError
from semask.serve.guard import Guard, InferenceGate
from semask.serve.limits import Limits
from semask.serve.results import Prediction, encode_base64, label_map, legend
from semask.tools.visualize import Colour, default_palette, label_image


class Error(BaseModel):
    """Body of every 4xx/5xx answer."""

    detail: str = Field(description="what went wrong, in one line")


class ModelInfo(BaseModel):
    """The served model."""

    arch: str
    num_classes: int
    classes: list[str]
    palette: list[list[int]]
    semantic: bool = Field(description="whether the model has semantic layers (prior maps)")
    params: int
    source: str
    limits: dict[str, float] = Field(description="max_upload_bytes, max_pixels, queue, timeout_s")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "empty, truncated, corrupt or non-image upload"},
    408: {"model": Error, "description": "the upload took longer than the request limit"},
    413: {"model": Error, "description": "upload above the byte limit, or image above the pixel limit"},
    503: {"model": Error, "description": "the inference queue is full, or the request ran past the limit"},
}


class Segmentation:
    """Decode an upload and segment it (runs on the inference thread).

    Args:
        predictor: the model's :class:`~semask.engine.inference.Predictor`.
        names, palette: one class name and (r, g, b) colour per class.
        max_pixels: largest H * W decoded, checked from the header first.
    """

    def __init__(
        self, predictor: Predictor, names: Sequence[str], palette: Sequence[Colour], max_pixels: int
    ) -> None:
        self.predictor, self.names, self.palette, self.max_pixels = predictor, names, palette, max_pixels

    def decode(self, data: bytes, filename: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB of the uploaded file.

        Raises:
            HTTPException: 400 for an empty, non-image, truncated or corrupt file; 413 above ``max_pixels``.
        """
        if not data:
            raise HTTPException(400, f"{filename}: empty upload (0 bytes)")
        with tempfile.TemporaryDirectory(prefix="semask-serve-") as folder:
            path = Path(folder) / "upload"
            path.write_bytes(data)
            try:
                h, w = image_size(path)
                if h * w > self.max_pixels:
                    raise HTTPException(
                        413,
                        f"{filename}: {h}x{w} (HxW) image of {h * w / 1e6:.1f} M pixels is above the limit of "
                        f"{self.max_pixels / 1e6:.1f} M pixels (checked before decoding)",
                    )
                return read_image(path, max_pixels=self.max_pixels)
            except DataError as e:
                raise HTTPException(400, str(e).replace(str(path), filename)) from None

    def __call__(self, data: bytes, filename: str, fmt: str, priors: bool, image: bool) -> Prediction:
        rgb = self.decode(data, filename)
        start = time.perf_counter()
        label = self.predictor.predict(rgb)
        inference_ms = 1000 * (time.perf_counter() - start)
        prior_pngs = priors_ms = None
        if priors and self.predictor.model.backbone.semantic:
            start = time.perf_counter()
            maps = self.predictor.predict_priors(rgb)
            priors_ms = 1000 * (time.perf_counter() - start)
            prior_pngs = [encode_base64(label_image(m, self.palette)) for m in maps]
        return Prediction(
            label=label_map(label, self.palette, fmt),
            legend=legend(label, self.palette, self.names),
            priors=prior_pngs,
            image=encode_base64(Image.fromarray(rgb), "JPEG") if image else None,
            inference_ms=inference_ms,
            priors_ms=priors_ms,
        )


def model_info(model, info: dict[str, Any], limits: Limits) -> ModelInfo:
    """:class:`ModelInfo` of ``model`` and its ``info`` (as :func:`semask.load` returns it)."""
    k = model.num_classes
    return ModelInfo(
        arch=model.cfg.arch,
        num_classes=k,
        classes=list(info.get("classes") or [f"class {i}" for i in range(k)]),
        palette=[list(c) for c in info.get("palette") or default_palette(k)],
        semantic=bool(model.backbone.semantic),
        params=sum(p.numel() for p in model.parameters()),
        source=str(info.get("source") or ""),
        limits={k: float(v) for k, v in vars(limits).items()},
    )


def create_app(
    model,
    info: dict[str, Any],
    limits: Limits | None = None,
    cfg: InferenceCfg | None = None,
    device: str = "cpu",
) -> FastAPI:
    """The web app serving ``model``.

    Args:
        model: a :class:`~semask.models.segmenter.Segmenter` in eval mode.
        info: ``semask.load(..., with_info=True)``'s info (classes, palette, source; defaults when missing).
        limits: upload, pixel, queue and time limits (:class:`~semask.serve.limits.Limits`).
        cfg: inference settings (default: whole-image inference at the image's size).
    """
    limits = limits or Limits()
    about = model_info(model, info, limits)
    palette = [tuple(c) for c in about.palette]
    segment = Segmentation(Predictor(model, cfg, device), about.classes, palette, limits.max_pixels)
    gate = InferenceGate(limits.queue)
    page = resources.files("semask.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(
        title="semask serve",
        version="1",
        description="Semantic segmentation with SeMask: upload an image, get its class map, legend and the "
        "per-stage semantic-prior maps.",
        on_shutdown=[gate.shutdown],
    )
    app.add_middleware(Guard, max_bytes=limits.max_upload_bytes, timeout_s=limits.timeout_s)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: ``{"status": "ok"}`` while the server runs."""
        return {"status": "ok"}

    @app.get("/api/model", response_model=ModelInfo)
    async def get_model() -> ModelInfo:
        """The model: architecture, classes and their colours, parameters, source and the server's limits."""
        return about

    @app.post("/api/predict", response_model=Prediction, responses=_ERRORS)
    async def predict(
        file: Annotated[UploadFile, File(description="the image (JPEG, PNG, WebP, BMP, TIFF, ...)")],
        format: Annotated[Literal["png", "rle"], Query(description="encoding of the class map")] = "png",
        priors: Annotated[bool, Query(description="also return the four semantic-prior maps")] = False,
        image: Annotated[
            bool, Query(description="also return the decoded image (EXIF-rotated) as JPEG")
        ] = False,
    ) -> Prediction:
        """Segment one image: the class map, the legend of the classes present (area in %) and timings."""
        data = await file.read()
        return await gate.run(segment, data, file.filename or "upload", format, priors, image)

    return app
