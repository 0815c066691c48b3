"""Class weights from label statistics, for long-tailed datasets such as CamVid (not part of the paper's recipes)."""

import numpy as np

from semask.data.datasets import SegDataset
from semask.errors import DataError


def median_frequency_weights(dataset: SegDataset, power: float = 0.5) -> list[float]:
    """Median-frequency balancing (Eigen & Fergus, ICCV 2015; used by SegNet on CamVid), softened by ``power``.

    ``freq_c`` = pixels of class c / pixels of the images that contain c; ``w_c = (median(freq) / freq_c) ** power``
    (``power=1`` is the original, ``0.5`` its square root), then scaled so the pixel-weighted mean weight is 1, which
    keeps the loss scale (and so the learning rate) of the unweighted loss.

    Args:
        dataset: every label is read once, the images are not (ignore_index 255 is left out).
        power: softening exponent in [0, 1].

    Returns:
        ``num_classes`` floats, for ``--set train.class_weight=[...]``.

    Raises:
        DataError: a class never appears in the labels (its weight would be infinite).
    """
    k = dataset.meta.num_classes
    pixels = np.zeros(k, np.int64)
    image_pixels = np.zeros(k, np.int64)
    for i in range(len(dataset)):
        label = dataset.load_label(i)
        counts = np.bincount(label.ravel(), minlength=256)[:k]
        pixels += counts
        image_pixels += (counts > 0) * label.size
    if (pixels == 0).any():
        missing = [dataset.meta.classes[c] for c in np.flatnonzero(pixels == 0)]
        raise DataError(
            f"{dataset.meta.name}: classes never present in the labels ({len(dataset)} files): {', '.join(missing)}"
        )
    freq = pixels / image_pixels
    weight = (np.median(freq) / freq) ** power
    weight /= (weight * pixels).sum() / pixels.sum()
    return [round(float(w), 4) for w in weight]
