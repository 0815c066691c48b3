"""One preset per paper row (Table 2; recipes of SPEC A3) plus CPU presets for CamVid.

Grammar (mmseg, simplified): ``{arch}_{dataset}-{crop}_{schedule}``, e.g.
``semask_swin_tiny_fpn_ade20k-512_80k``. The Swin baselines (``swin_*_fpn_*``) use the same recipes.
"""

from collections.abc import Callable

from semask.configs.schema import DataCfg, EvalCfg, ExperimentCfg, ModelCfg, OptimCfg, TrainCfg

ADE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

PRESETS: dict[str, Callable[[], ExperimentCfg]] = {}


def _ade20k(arch: str, size: str) -> ExperimentCfg:
    """SeMask-FPN ADE20K: official ``configs/semask_swin/ade20k/*``."""
    large = size == "large"
    crop = 640 if large else 512
    return ExperimentCfg(
        name=f"{arch}_ade20k-{crop}_80k",
        model=ModelCfg(arch=arch, num_classes=150),
        data=DataCfg(
            dataset="ade20k",
            crop_size=(crop, crop),
            scale=(2560, 640) if large else (2048, 512),
            test_scale=(2560, 640) if large else (2048, 512),
            ratios=ADE_RATIOS,
            cat_max_ratio=0.75 if size == "tiny" else 1.0,
        ),
        optim=OptimCfg(lr=1e-4, weight_decay=1e-4),
        train=TrainCfg(batch_size=16, ohem_min_kept=100000 if large else None),
        eval=EvalCfg(crop=(crop, crop)),
    )


def _cityscapes(arch: str, size: str) -> ExperimentCfg:
    """SeMask-FPN Cityscapes: official ``configs/semask_swin/cityscapes/*`` (768 crops, whole 2048x1024 test)."""
    return ExperimentCfg(
        name=f"{arch}_cityscapes-768_80k",
        model=ModelCfg(arch=arch, num_classes=19),
        data=DataCfg(
            dataset="cityscapes",
            crop_size=(768, 768),
            scale=(2048, 1024),
            test_scale=(2048, 1024),
            ratios=None,
            ratio_range=(0.5, 2.0),
            cat_max_ratio=0.75,
        ),
        optim=OptimCfg(lr=1e-3, weight_decay=0.05),
        train=TrainCfg(batch_size=8, warmup_ratio=1e-6 if size == "base" else 1e-5),
        eval=EvalCfg(crop=(768, 768), stride=(512, 512)),
    )


def _coco_stuff(arch: str, size: str) -> ExperimentCfg:
    """SeMask-FPN COCO-Stuff-10k: official ``configs/semask_swin/coco_stuff10k/*`` (171 classes, SPEC 0)."""
    large = size == "large"
    crop = 640 if large else 512
    return ExperimentCfg(
        name=f"{arch}_coco-stuff-10k-{crop}_80k",
        model=ModelCfg(arch=arch, num_classes=171),
        data=DataCfg(
            dataset="coco-stuff-10k",
            val_split="test",
            crop_size=(crop, crop),
            scale=(2560, 640) if large else (2048, 512),
            test_scale=(2560, 640) if large else (2048, 512),
            ratios=ADE_RATIOS,
            cat_max_ratio=1.0,
        ),
        optim=OptimCfg(lr=1e-4, weight_decay=1e-4),
        train=TrainCfg(batch_size=16, ohem_min_kept=100000),
        eval=EvalCfg(crop=(crop, crop)),
    )


def _camvid_cpu(arch: str) -> ExperimentCfg:
    """CamVid (11 classes, 480x360) from scratch on a 2-core CPU in under an hour (not a paper row)."""
    return ExperimentCfg(
        name=f"{arch}_camvid-360x480_cpu",
        model=ModelCfg(arch=arch, num_classes=11, drop_path_rate=0.0, decoder_channels=128),
        data=DataCfg(
            dataset="camvid",
            crop_size=(288, 384),
            scale=(480, 360),
            test_scale=None,
            ratios=None,
            ratio_range=(0.5, 1.5),
            cat_max_ratio=1.0,
            num_workers=1,
        ),
        optim=OptimCfg(lr=1e-3, weight_decay=0.01),
        train=TrainCfg(
            max_iters=1750,
            batch_size=8,
            warmup_iters=100,
            warmup_ratio=1e-3,
            amp="bf16",
            eval_interval=875,
            ckpt_interval=100,
            log_interval=10,
        ),
        eval=EvalCfg(crop=(360, 480), stride=(240, 320)),
    )


def _camvid_demo() -> ExperimentCfg:
    """The README demo: a small SeMask model on the bundled CamVid sample, a few minutes on a 2-core CPU."""
    cfg = _camvid_cpu("semask_swin_nano_fpn")
    cfg.name = "semask_swin_nano_fpn_camvid-demo"
    cfg.data.crop_size = (180, 240)
    cfg.data.ratio_range = (0.5, 1.0)
    cfg.data.num_workers = 0
    cfg.train.max_iters = 900
    cfg.train.batch_size = 4
    cfg.train.warmup_iters = 30
    cfg.train.eval_interval = 900
    cfg.train.ckpt_interval = 100
    return cfg


def _register() -> None:
    for size in ("tiny", "small", "base", "large"):
        for prefix in ("semask_", ""):
            arch = f"{prefix}swin_{size}_fpn"
            for build in (_ade20k, _cityscapes, _coco_stuff):
                name = build(arch, size).name
                PRESETS[name] = lambda b=build, a=arch, s=size: b(a, s)
    for arch in ("semask_swin_nano_fpn", "swin_nano_fpn"):
        PRESETS[_camvid_cpu(arch).name] = lambda a=arch: _camvid_cpu(a)
    PRESETS[_camvid_demo().name] = _camvid_demo


_register()
