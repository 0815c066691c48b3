"""Conversion of the official COCO-Stuff-10k v1.1 release to the mmseg layout (SPEC A5).

Reproduces mmseg's ``tools/convert_datasets/coco_stuff10k.py``: images are copied into
``images/{train2014,test2014}/`` after ``imageLists/{train,test}.txt``, and each ``annotations/<name>.mat``
(key ``'S'``: 0 = unlabeled, 1..182 = COCO-Stuff ids) is remapped with ``clsID_to_trID`` (0 -> 0, the 171
present ids 1..182 -> 1..171 in order) and written as ``annotations/{train2014,test2014}/<name>_labelTrainIds.png``.
The ``coco-stuff-10k`` dataset then applies ``reduce_zero_label`` (171 classes, 0 ignored).
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from semask.errors import DataError

COCO_STUFF_MISSING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
"""COCO thing ids that have no annotations (absent from COCO-Stuff's 182 ids)."""
COCO_STUFF_MAX_ID = 182

SPLITS = {"train": "train2014", "test": "test2014"}
"""imageLists file stem -> output folder name."""


def coco_stuff_id_lut() -> np.ndarray:
    """mmseg ``clsID_to_trID`` as a lookup table.

    Returns:
        (256,) int16: 0 -> 0, each present id in 1..182 -> 1..171 (in id order), everything else -> -1.
    """
    present = [i for i in range(1, COCO_STUFF_MAX_ID + 1) if i not in COCO_STUFF_MISSING_IDS]
    lut = np.full(256, -1, dtype=np.int16)
    lut[0] = 0
    lut[present] = np.arange(1, len(present) + 1)
    return lut


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: image list not found")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _convert_mat(mat_path: Path, png_path: Path, lut: np.ndarray) -> None:
    """Read ``'S'`` from a .mat annotation, remap it with ``lut`` and save it as a uint8 PNG."""
    from scipy.io import loadmat  # optional dependency: only this converter needs it
    from scipy.io.matlab import MatReadError

    if not mat_path.is_file():
        raise DataError(f"{mat_path}: annotation not found")
    try:
        contents = loadmat(mat_path)
    except (
        MatReadError,
        ValueError,
        OSError,
        TypeError,
        IndexError,
    ) as err:  # what loadmat raises on garbage
        raise DataError(f"{mat_path}: not a readable .mat file ({err})") from err
    if "S" not in contents:
        raise DataError(f"{mat_path}: no 'S' label array in this .mat file")
    ids = contents["S"]
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.number) or (ids != np.round(ids)).any():
        raise DataError(
            f"{mat_path}: 'S' must be a 2-D array of integer class ids, got {ids.dtype} {ids.shape}"
        )
    ids = ids.astype(np.int64)
    train_ids = lut[np.clip(ids, 0, 255)]
    bad = (ids < 0) | (ids > 255) | (train_ids < 0)
    if bad.any():
        raise DataError(f"{mat_path}: ids {np.unique(ids[bad]).tolist()} are not COCO-Stuff ids (0..182)")
    Image.fromarray(train_ids.astype(np.uint8)).save(png_path)


def prepare_coco_stuff_10k(src_root: str | Path, dst_root: str | Path) -> dict[str, int]:
    """Convert COCO-Stuff-10k v1.1 to the mmseg layout read by ``build_dataset("coco-stuff-10k", dst_root, ...)``.

    Args:
        src_root: the unpacked release: ``images/*.jpg``, ``annotations/*.mat``, ``imageLists/{train,test}.txt``
            (one image name without extension per line).
        dst_root: output folder; ``images/`` and ``annotations/`` are created in it (existing files are
            overwritten).

    Returns:
        Number of converted pairs per split, e.g. ``{"train": 9000, "test": 1000}`` for the full release.

    Raises:
        DataError: a missing list, image or annotation, or a .mat without a valid ``'S'`` (names the file).
        ImportError: scipy is not installed (``pip install scipy``).
    """
    src_root, dst_root = Path(src_root), Path(dst_root)
    lut = coco_stuff_id_lut()
    counts = {}
    for split, folder in SPLITS.items():
        names = _read_list(src_root / "imageLists" / f"{split}.txt")
        image_dir, label_dir = dst_root / "images" / folder, dst_root / "annotations" / folder
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            image = src_root / "images" / f"{name}.jpg"
            if not image.is_file():
                raise DataError(f"{image}: image listed in imageLists/{split}.txt not found")
            shutil.copyfile(image, image_dir / image.name)
            _convert_mat(
                src_root / "annotations" / f"{name}.mat", label_dir / f"{name}_labelTrainIds.png", lut
            )
        counts[split] = len(names)
    return counts
