"""Presets of the original (plain Swin, no semantic layers) Mask2Former and MaskFormer models: the recipes of
``facebookresearch/Mask2Former`` ``configs/ade20k/semantic-segmentation/swin/*_160k*.yaml`` and
``configs/cityscapes/semantic-segmentation/swin/*_90k.yaml``, and of ``facebookresearch/MaskFormer``
``configs/ade20k-150/swin/*_160k*.yaml`` (the detectron2 parts as in :mod:`semask.configs.presets.d2`).

ADE20K crops: 512 for Swin-T/S (ImageNet-1k 224 weights), 640 for Swin-B/L (ImageNet-22k 384 weights, window 12,
the ``res640`` configs).
"""

from semask.configs.presets import register
from semask.configs.presets.d2 import _d2_cityscapes, _d2_recipe
from semask.configs.schema import DataCfg, EvalCfg, ExperimentCfg, TrainCfg

CROP = {"tiny": 512, "small": 512, "base": 640, "large": 640}
"""ADE20K crop (and test short side) per Swin size."""


def _ade20k(arch: str, crop: int, mask2former: bool) -> ExperimentCfg:
    """Mask2Former / MaskFormer ADE20K 160k: ResizeShortestEdge choice of ``int(x * 0.1 * crop)`` for x in 5..20
    (max 4 * crop), ``crop`` x ``crop`` crops; test short side ``crop`` (max 4 * crop); TTA short sides
    ``crop/2 .. 7*crop/4`` in steps of ``crop/4`` (max 7 * crop) + flip."""
    edges = [int(x * 0.1 * crop) for x in range(5, 21)]
    recipe = _d2_recipe(edges, 4 * crop, mask2former)
    step = crop // 4
    return ExperimentCfg(
        name=f"{arch}_ade20k-{crop}_160k",
        model=dict(arch=arch, num_classes=150, drop_path_rate=0.3),
        data=DataCfg(dataset="ade20k", crop_size=(crop, crop), ratios=None, **recipe["data"]),
        optim=recipe["optim"],
        train=TrainCfg(max_iters=160000, **recipe["train"]),
        eval=EvalCfg(
            crop=(crop, crop),
            scale=(4 * crop, crop),
            tta_scales=tuple((7 * crop, s) for s in range(2 * step, 7 * step + 1, step)),
            metric="detectron2",
        ),
    )


for _size, _crop in CROP.items():
    register(lambda a=f"swin_{_size}_m2f", c=_crop: _ade20k(a, c, mask2former=True))
    register(lambda a=f"swin_{_size}_maskformer", c=_crop: _ade20k(a, c, mask2former=False))
    register(lambda a=f"swin_{_size}_m2f": _d2_cityscapes(a))
