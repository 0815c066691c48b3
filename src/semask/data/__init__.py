"""Data layer: dataset metadata, image/label reading, datasets, augmentations and the COCO-Stuff converter."""

from semask.data.coco_stuff import prepare_coco_stuff_10k
from semask.data.datasets import SegDataset, build_dataset
from semask.data.io import image_size, read_image, read_label
from semask.data.meta import DatasetMeta, get_meta
from semask.data.transforms import TestTransform, TrainTransform, sample_rng

__all__ = [
    "DatasetMeta",
    "SegDataset",
    "TestTransform",
    "TrainTransform",
    "build_dataset",
    "get_meta",
    "image_size",
    "prepare_coco_stuff_10k",
    "read_image",
    "read_label",
    "sample_rng",
]
