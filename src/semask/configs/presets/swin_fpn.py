"""SeMask-FPN and Swin FPN presets (paper Table 2; recipes of SPEC A3, the official ``configs/semask_swin/*``)."""

from semask.configs.presets import register
from semask.configs.schema import DataCfg, EvalCfg, ExperimentCfg, OptimCfg, TrainCfg

ADE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def _ade20k(arch: str, size: str) -> ExperimentCfg:
    """SeMask-FPN ADE20K: official ``configs/semask_swin/ade20k/*``."""
    large = size == "large"
    crop = 640 if large else 512
    return ExperimentCfg(
        name=f"{arch}_ade20k-{crop}_80k",
        model=dict(arch=arch, num_classes=150),
        data=DataCfg(
            dataset="ade20k",
            crop_size=(crop, crop),
            scale=(2560, 640) if large else (2048, 512),
            ratios=ADE_RATIOS,
            cat_max_ratio=0.75 if size == "tiny" else 1.0,
        ),
        optim=OptimCfg(lr=1e-4, weight_decay=1e-4),
        train=TrainCfg(batch_size=16, ohem_min_kept=100000 if large else None),
        eval=EvalCfg(crop=(crop, crop), scale=(2560, 640) if large else (2048, 512)),
    )


def _cityscapes(arch: str, size: str) -> ExperimentCfg:
    """SeMask-FPN Cityscapes: official ``configs/semask_swin/cityscapes/*`` (768 crops, whole 2048x1024 test)."""
    return ExperimentCfg(
        name=f"{arch}_cityscapes-768_80k",
        model=dict(arch=arch, num_classes=19),
        data=DataCfg(
            dataset="cityscapes",
            crop_size=(768, 768),
            scale=(2048, 1024),
            ratios=None,
            ratio_range=(0.5, 2.0),
            cat_max_ratio=0.75,
        ),
        optim=OptimCfg(lr=1e-3, weight_decay=0.05),
        train=TrainCfg(batch_size=8, warmup_ratio=1e-6 if size == "base" else 1e-5),
        eval=EvalCfg(crop=(768, 768), stride=(512, 512), scale=(2048, 1024)),
    )


def _coco_stuff(arch: str, size: str) -> ExperimentCfg:
    """SeMask-FPN COCO-Stuff-10k: official ``configs/semask_swin/coco_stuff10k/*`` (171 classes, SPEC 0)."""
    large = size == "large"
    crop = 640 if large else 512
    return ExperimentCfg(
        name=f"{arch}_coco-stuff-10k-{crop}_80k",
        model=dict(arch=arch, num_classes=171),
        data=DataCfg(
            dataset="coco-stuff-10k",
            val_split="test",
            crop_size=(crop, crop),
            scale=(2560, 640) if large else (2048, 512),
            ratios=ADE_RATIOS,
            cat_max_ratio=1.0,
        ),
        optim=OptimCfg(lr=1e-4, weight_decay=1e-4),
        train=TrainCfg(batch_size=16, ohem_min_kept=100000),
        eval=EvalCfg(crop=(crop, crop), scale=(2560, 640) if large else (2048, 512)),
    )


for _size in ("tiny", "small", "base", "large"):
    for _prefix in ("semask_", ""):
        for _build in (_ade20k, _cityscapes, _coco_stuff):
            register(lambda b=_build, a=f"{_prefix}swin_{_size}_fpn", s=_size: b(a, s))
