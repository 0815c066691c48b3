"""Segmentation datasets: file discovery, label mapping and loading; every problem raises :class:`DataError`.

Layouts, by ``build_dataset`` name (``root`` is the folder passed in; splits in brackets):

- ``"ade20k"`` [train, val]: ``root/images/{training,validation}/*.jpg`` and
  ``root/annotations/{training,validation}/*.png``, or the same inside ``root/ADEChallengeData2016/``.
  Raw labels 0..150 with ``reduce_zero_label`` (0 -> 255, v -> v - 1; SPEC A5).
- ``"cityscapes"`` [train, val, test]: ``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``root/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (19 classes, 255 ignore); where a labelTrainIds
  file is absent, ``*_gtFine_labelIds.png`` is mapped with the cityscapesscripts id -> trainId table.
- ``"coco-stuff-10k"`` [train, test]: the mmseg layout written by :func:`semask.data.coco_stuff.prepare_coco_stuff_10k`,
  ``root/images/{train2014,test2014}/*.jpg`` and ``root/annotations/{train2014,test2014}/*_labelTrainIds.png``;
  ``reduce_zero_label`` gives 171 classes.
- ``"camvid"`` [train, val, test]: the SegNet layout, ``root/<split>/*`` and ``root/<split>annot/*``; raw
  labels 0..10 are the classes and 11 (Unlabelled) becomes 255.
- ``"folder"`` (your own data) [any split]::

      root/
        classes.json          # or classes.txt: one class name per line, in label-value order
        images/<split>/*.jpg  # any of .jpg .jpeg .png .bmp .tif .tiff .webp
        masks/<split>/*.png   # same file stem as the image; pixel value = class index, 255 = ignore

  ``classes.json`` is either a list of class names or an object
  ``{"classes": [...], "palette": [[r, g, b], ...], "reduce_zero_label": false, "name": "..."}`` where only
  ``classes`` is required. With ``reduce_zero_label`` mask value 0 is ignored and value v is class v - 1.

Images and labels are paired by file stem (any image extension), except Cityscapes which pairs by its fixed
suffixes. Hidden files (``.*``) are skipped; any other file without a label, label without an image, or file
with an unknown extension is an error, so nothing is dropped silently.
"""

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semask.data.io import read_image, read_label
from semask.data.meta import DatasetMeta, default_palette, get_meta
from semask.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
UNKNOWN_LABEL_POLICIES = ("error", "ignore")

# cityscapesscripts helpers/labels.py: label id -> train id for ids 0..33 (255 = ignored in training).
CITYSCAPES_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
CITYSCAPES_NUM_IDS = 34
CAMVID_UNLABELLED = 11  # SegNet CamVid label value for "Unlabelled", mapped to 255

Transform = Callable[[np.ndarray, np.ndarray], dict[str, torch.Tensor]]


# --------------------------------------------------------------------------------------- label mapping
def label_lut(meta: DatasetMeta, extra_ignore: Sequence[int] = ()) -> np.ndarray:
    """Lookup table from raw label values to training labels.

    Args:
        meta: the dataset; with ``reduce_zero_label`` raw 0 -> ignore and raw v -> v - 1 (mmseg
            ``LoadAnnotations``, SPEC A5), otherwise raw v -> v.
        extra_ignore: further raw values mapped to ``meta.ignore_index`` (CamVid's 11 = Unlabelled).

    Returns:
        (256,) int16: class index, ``meta.ignore_index``, or -1 for raw values that are not classes.
        Raw ``ignore_index`` always maps to itself.
    """
    lut = np.full(256, -1, dtype=np.int16)
    offset = 1 if meta.reduce_zero_label else 0
    lut[offset : offset + meta.num_classes] = np.arange(meta.num_classes)
    lut[list(extra_ignore) + [meta.ignore_index]] = meta.ignore_index
    if meta.reduce_zero_label:
        lut[0] = meta.ignore_index
    return lut


def cityscapes_id_lut() -> np.ndarray:
    """Lookup table for ``*_gtFine_labelIds.png``: ids 0..33 -> train ids 0..18 or 255; other values -> -1."""
    lut = np.full(256, -1, dtype=np.int16)
    lut[:CITYSCAPES_NUM_IDS] = 255
    lut[255] = 255
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


# ------------------------------------------------------------------------------------------- dataset
class SegDataset(torch.utils.data.Dataset):
    """Image/label pairs with a per-file label mapping, checked as they are loaded.

    Args:
        files: (image path, label path) pairs.
        meta: class names, palette and ignore index.
        luts: one (256,) int16 lookup table per pair (see :func:`label_lut`); None uses ``label_lut(meta)``.
        transform: called as ``transform(image, label)``, returning tensors (e.g.
            :class:`~semask.data.transforms.TrainTransform`); None returns numpy arrays.
        unknown_label: ``"error"`` raises on label values that are not classes (nor 255); ``"ignore"`` maps
            them to 255.

    Raises:
        DataError: ``files`` is empty.
        ConfigError: unknown ``unknown_label`` policy, or ``luts`` not parallel to ``files``.
    """

    def __init__(
        self,
        files: Sequence[tuple[Path, Path]],
        meta: DatasetMeta,
        luts: Sequence[np.ndarray] | None = None,
        transform: Transform | None = None,
        unknown_label: str = "error",
    ) -> None:
        if unknown_label not in UNKNOWN_LABEL_POLICIES:
            raise ConfigError(f"unknown_label must be one of {UNKNOWN_LABEL_POLICIES}, got {unknown_label!r}")
        if not files:
            raise DataError(f"{meta.name}: the dataset has no files")
        self.files = [(Path(image), Path(label)) for image, label in files]
        self.meta = meta
        self.luts = list(luts) if luts is not None else [label_lut(meta)] * len(self.files)
        if len(self.luts) != len(self.files):
            raise ConfigError(f"{len(self.luts)} label tables for {len(self.files)} files")
        self.transform = transform
        self.unknown_label = unknown_label

    def __len__(self) -> int:
        return len(self.files)

    def load_label(self, index: int) -> np.ndarray:
        """Read and map the label of pair ``index`` (the image is not read).

        Returns:
            (H, W) uint8 of class indices and 255.

        Raises:
            DataError: unreadable file, or (with ``unknown_label="error"``) label values that are not classes
                (names the file and the values).
        """
        label_path = self.files[index][1]
        raw = read_label(label_path)
        mapped = self.luts[index][raw]
        unknown = mapped < 0
        if unknown.any():
            if self.unknown_label == "error":
                values = np.unique(raw[unknown]).tolist()
                raise DataError(
                    f"{label_path}: label values {values} are not classes of {self.meta.name} "
                    f"({self.meta.num_classes} classes, ignore {self.meta.ignore_index}"
                    f"{', reduce_zero_label' if self.meta.reduce_zero_label else ''}); "
                    "to ignore them pass unknown_label='ignore' (semask train --set data.unknown_label=ignore, "
                    "semask eval --unknown-label ignore)"
                )
            mapped[unknown] = self.meta.ignore_index
        return mapped.astype(np.uint8)

    def load(self, index: int) -> dict[str, Any]:
        """Read pair ``index`` and map its label (:meth:`load_label`), without the transform.

        Returns:
            ``image``: (H, W, 3) uint8 RGB; ``label``: (H, W) uint8 of class indices and 255; ``path``: the
            image path as a string.

        Raises:
            DataError: as :meth:`load_label`, an unreadable image, or image and label of different sizes (names
                both).
        """
        image_path, label_path = self.files[index]
        image, label = read_image(image_path), self.load_label(index)
        if image.shape[:2] != label.shape:
            raise DataError(
                f"{image_path} is {image.shape[0]}x{image.shape[1]} but its label {label_path} is "
                f"{label.shape[0]}x{label.shape[1]} (HxW)"
            )
        return {"image": image, "label": label, "path": str(image_path)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Pair ``index``: :meth:`load`, then ``transform(image, label)`` merged with ``path`` when set.

        Returns:
            Without transform, as :meth:`load`. With one, its output (usually ``image`` (3, h, w) float32 and
            ``label`` (h, w) int64 tensors) plus ``path``.
        """
        sample = self.load(index)
        if self.transform is None:
            return sample
        return {**self.transform(sample["image"], sample["label"]), "path": sample["path"]}


# ------------------------------------------------------------------------------------- file discovery
def _require_dir(folder: Path) -> Path:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return folder


def _index_by_stem(folder: Path, suffix: str = "") -> dict[str, Path]:
    """Map ``stem minus suffix`` -> file for every non-hidden file of ``folder``; strict about the rest."""
    index: dict[str, Path] = {}
    for path in sorted(_require_dir(folder).iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"{path}: not an image extension (expected one of {', '.join(IMAGE_EXTENSIONS)})")
        if not path.stem.endswith(suffix):
            raise DataError(f"{path}: file name should end with {suffix}{path.suffix}")
        key = path.stem[: len(path.stem) - len(suffix)]
        if key in index:
            raise DataError(f"{index[key]} and {path}: two files for the same name")
        index[key] = path
    if not index:
        raise DataError(f"{folder}: no image files")
    return index


def pair_by_stem(image_dir: Path, label_dir: Path, label_suffix: str = "") -> list[tuple[Path, Path]]:
    """Pair ``image_dir/<stem>.<ext>`` with ``label_dir/<stem><label_suffix>.<ext>``, any image extensions.

    Args:
        image_dir: folder of images.
        label_dir: folder of labels.
        label_suffix: text between the shared stem and the label's extension (e.g. ``"_labelTrainIds"``).

    Returns:
        (image, label) pairs sorted by stem.

    Raises:
        DataError: a missing or empty folder, an image without a label, a label without an image, two files
            with one stem, or a file with an unknown extension (each message names the file or folder).
    """
    images, labels = _index_by_stem(image_dir), _index_by_stem(label_dir, label_suffix)
    for stem, image in images.items():
        if stem not in labels:
            raise DataError(f"{image}: no label {stem}{label_suffix}.* in {label_dir}")
    for stem, label in labels.items():
        if stem not in images:
            raise DataError(f"{label}: no image {stem}.* in {image_dir}")
    return [(images[stem], labels[stem]) for stem in sorted(images)]


def _check_split(name: str, split: str, splits: dict[str, str]) -> str:
    if split not in splits:
        raise ConfigError(f"{name} has splits {', '.join(splits)}, not {split!r}")
    return splits[split]


# ------------------------------------------------------------------------------------- dataset layouts
Layout = tuple[DatasetMeta, list[tuple[Path, Path]], list[np.ndarray] | None]
"""What a layout function finds: the meta, the (image, label) pairs and their label tables (None: standard)."""


def _ade20k(root: Path, split: str) -> Layout:
    folder = _check_split("ade20k", split, {"train": "training", "val": "validation"})
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    return get_meta("ade20k"), pair_by_stem(root / "images" / folder, root / "annotations" / folder), None


def _cityscapes(root: Path, split: str) -> Layout:
    _check_split("cityscapes", split, {"train": "train", "val": "val", "test": "test"})
    image_dir = _require_dir(root / "leftImg8bit" / split)
    images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise DataError(f"{image_dir}: no <city>/*_leftImg8bit.png images")
    meta = get_meta("cityscapes")
    train_id_lut, id_lut = label_lut(meta), cityscapes_id_lut()
    files, luts = [], []
    for image in images:
        base = root / "gtFine" / split / image.parent.name / image.name.removesuffix("_leftImg8bit.png")
        train_ids, label_ids = Path(f"{base}_gtFine_labelTrainIds.png"), Path(f"{base}_gtFine_labelIds.png")
        if train_ids.is_file():
            files.append((image, train_ids))
            luts.append(train_id_lut)
        elif label_ids.is_file():
            files.append((image, label_ids))
            luts.append(id_lut)
        else:
            raise DataError(f"{image}: no label {train_ids.name} or {label_ids.name} in {train_ids.parent}")
    return meta, files, luts


def _coco_stuff_10k(root: Path, split: str) -> Layout:
    folder = _check_split("coco-stuff-10k", split, {"train": "train2014", "test": "test2014"})
    files = pair_by_stem(root / "images" / folder, root / "annotations" / folder, "_labelTrainIds")
    return get_meta("coco-stuff-10k"), files, None


def _camvid(root: Path, split: str) -> Layout:
    _check_split("camvid", split, {"train": "train", "val": "val", "test": "test"})
    meta, files = get_meta("camvid"), pair_by_stem(root / split, root / f"{split}annot")
    return meta, files, [label_lut(meta, extra_ignore=(CAMVID_UNLABELLED,))] * len(files)


def _folder(root: Path, split: str) -> Layout:
    meta = _read_classes_file(_require_dir(root))
    return meta, pair_by_stem(root / "images" / split, root / "masks" / split), None


CLASS_SPEC_KEYS = ("classes", "palette", "reduce_zero_label", "name")


def _load_class_spec(root: Path) -> tuple[Path, dict[str, Any]]:
    """The classes file of a ``folder`` dataset and its content as a dict (a bare list becomes ``classes``)."""
    json_path, txt_path = root / "classes.json", root / "classes.txt"
    if json_path.is_file():
        try:
            spec = json.loads(json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{json_path}: not valid JSON ({err})") from err
        spec = {"classes": spec} if isinstance(spec, list) else spec
        if not isinstance(spec, dict):
            raise DataError(f"{json_path}: expected a list of class names or an object with 'classes'")
        return json_path, spec
    if txt_path.is_file():
        lines = txt_path.read_text(encoding="utf-8").splitlines()
        return txt_path, {"classes": [line.strip() for line in lines if line.strip()]}
    raise DataError(f"{root}: no classes.json or classes.txt naming the classes")


def _is_color(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in value)
    )


def _read_classes_file(root: Path) -> DatasetMeta:
    """DatasetMeta of a ``folder`` dataset from ``root/classes.json`` or ``root/classes.txt``, validated."""
    path, spec = _load_class_spec(root)
    unknown_keys = set(spec) - set(CLASS_SPEC_KEYS)
    if unknown_keys:
        raise DataError(f"{path}: unknown keys {sorted(unknown_keys)}; allowed: {', '.join(CLASS_SPEC_KEYS)}")
    classes = spec.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise DataError(f"{path}: 'classes' must be a non-empty list of non-empty names")
    reduce_zero_label = spec.get("reduce_zero_label", False)
    if not isinstance(reduce_zero_label, bool):
        raise DataError(f"{path}: 'reduce_zero_label' must be true or false")
    max_classes = 254 if reduce_zero_label else 255
    if len(classes) > max_classes:
        raise DataError(
            f"{path}: {len(classes)} classes, but uint8 masks with 255 = ignore allow {max_classes}"
        )
    palette = spec.get("palette", default_palette(len(classes)))
    if (
        not isinstance(palette, list | tuple)
        or len(palette) != len(classes)
        or not all(map(_is_color, palette))
    ):
        raise DataError(f"{path}: 'palette' must hold one [r, g, b] (0..255) per class ({len(classes)})")
    return DatasetMeta(
        name=str(spec.get("name", root.name)),
        classes=tuple(classes),
        palette=tuple((c[0], c[1], c[2]) for c in palette),
        reduce_zero_label=reduce_zero_label,
    )


_LAYOUTS: dict[str, Callable[[Path, str], Layout]] = {
    "ade20k": _ade20k,
    "cityscapes": _cityscapes,
    "coco-stuff-10k": _coco_stuff_10k,
    "camvid": _camvid,
    "folder": _folder,
}


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    transform: Transform | None = None,
    unknown_label: str = "error",
) -> SegDataset:
    """Build a dataset from its folder (layouts in the module docstring).

    Args:
        name: ``"ade20k"``, ``"cityscapes"``, ``"coco-stuff-10k"``, ``"camvid"`` or ``"folder"``.
        root: dataset folder.
        split: e.g. ``"train"``, ``"val"`` (``"test"`` for COCO-Stuff-10k and CamVid).
        transform: see :class:`SegDataset`.
        unknown_label: ``"error"`` or ``"ignore"``, see :class:`SegDataset`.

    Returns:
        The :class:`SegDataset`; ``dataset.meta`` gives its classes and palette.

    Raises:
        ConfigError: unknown dataset name, split or ``unknown_label``.
        DataError: missing or empty folders, unpaired files, or a bad classes file (each message names it).
    """
    if name not in _LAYOUTS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(_LAYOUTS)}")
    meta, files, luts = _LAYOUTS[name](Path(root), split)
    return SegDataset(files, meta, luts=luts, transform=transform, unknown_label=unknown_label)
