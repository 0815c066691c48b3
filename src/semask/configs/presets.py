"""One preset per paper row (Table 2 FPN rows, Table 3/4 Mask2Former/MaskFormer rows; recipes of SPEC A3) plus CPU
presets for CamVid.

Grammar (mmseg, simplified): ``{arch}_{dataset}-{crop}_{schedule}``, e.g.
``semask_swin_tiny_fpn_ade20k-512_80k``. The Swin baselines (``swin_*_fpn_*``) use the same recipes. The
mask-classification presets exist for every Swin size (the paper trains only L).
"""

from collections.abc import Callable

from semask.configs.schema import DataCfg, EvalCfg, ExperimentCfg, OptimCfg, TrainCfg

ADE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

PRESETS: dict[str, Callable[[], ExperimentCfg]] = {}


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


def _d2_recipe(short_edges: list[int], max_size: int, mask2former: bool) -> dict:
    """What the detectron2 configs share (SPEC A3 'D2'): ResizeShortestEdge choice, crop without the category
    constraint, ColorAugSSD, flip, raw 128 padding; AdamW with the d2 parameter rules, WarmupPolyLR power 0.9 and
    full-model gradient clipping at 0.01; checkpoints and evaluation every 5000 iterations."""
    return dict(
        data=dict(short_edges=tuple(short_edges), max_size=max_size, cat_max_ratio=1.0, image_pad_value=128),
        optim=OptimCfg(
            lr=1e-4 if mask2former else 6e-5,
            weight_decay=0.05 if mask2former else 0.01,
            grad_clip=0.01,
            param_rules="d2",
            backbone_lr_mult=0.1 if mask2former else 1.0,
        ),
        train=dict(
            batch_size=16,
            power=0.9,
            warmup_iters=0 if mask2former else 1500,
            warmup_ratio=1.0 if mask2former else 1e-6,
            amp="fp16" if mask2former else "none",  # SOLVER.AMP; on CPU use --set train.amp=bf16
            eval_interval=5000,
            ckpt_interval=5000,
        ),
    )


def _d2_ade20k(arch: str) -> ExperimentCfg:
    """SeMask Mask2Former / MaskFormer / FaPN / MSFaPN ADE20K (official ``configs/ade20k/semantic-segmentation/
    semask_swin``; FaPN and MSFaPN share the Mask2Former recipe):
    640 crops, 160k iterations; test short side 640 (max 2560); TTA short sides 320..1120 (max 4480) + flip."""
    mask2former = "maskformer" not in arch
    # INPUT.MIN_SIZE_TRAIN, as the official configs compute it
    edges = (
        [int(x * 0.1 * 640) for x in range(5, 21)]
        if mask2former
        else [int(0.25 * x * 640) for x in range(1, 8)]
    )
    recipe = _d2_recipe(edges, 2560, mask2former)
    return ExperimentCfg(
        name=f"{arch}_ade20k-640_160k",
        model=dict(arch=arch, num_classes=150, drop_path_rate=0.3),
        data=DataCfg(dataset="ade20k", crop_size=(640, 640), ratios=None, **recipe["data"]),
        optim=recipe["optim"],
        train=TrainCfg(max_iters=160000, **recipe["train"]),
        eval=EvalCfg(
            crop=(640, 640),
            scale=(2560, 640),
            tta_scales=tuple((4480, s) for s in range(320, 1121, 160)),
            metric="detectron2",
        ),
    )


def _d2_cityscapes(arch: str) -> ExperimentCfg:
    """SeMask Mask2Former Cityscapes (official ``configs/cityscapes/semantic-segmentation/semask_swin``):
    512x1024 crops, 90k iterations; test short side 1024 (max 2048); TTA short sides 512..1792 (max 4096) + flip."""
    recipe = _d2_recipe([int(x * 0.1 * 1024) for x in range(5, 21)], 4096, mask2former=True)
    return ExperimentCfg(
        name=f"{arch}_cityscapes-512x1024_90k",
        model=dict(arch=arch, num_classes=19, drop_path_rate=0.3),
        data=DataCfg(
            dataset="cityscapes",
            crop_size=(512, 1024),
            ratios=None,
            **recipe["data"],
        ),
        optim=recipe["optim"],
        train=TrainCfg(max_iters=90000, **recipe["train"]),
        eval=EvalCfg(
            crop=(512, 1024),
            scale=(2048, 1024),
            tta_scales=tuple((4096, s) for s in range(512, 1793, 256)),
            metric="detectron2",
        ),
    )


def _camvid_cpu(arch: str) -> ExperimentCfg:
    """CamVid (11 classes, 480x360) from scratch on a 2-core CPU in under an hour (not a paper row)."""
    return ExperimentCfg(
        name=f"{arch}_camvid-360x480_cpu",
        model=dict(arch=arch, num_classes=11, drop_path_rate=0.0, decoder_channels=128),
        data=DataCfg(
            dataset="camvid",
            crop_size=(256, 320),  # fp32 on a 2-core AVX2 CPU: 1.6 s/iteration, 2000 in 54 min
            scale=(480, 360),
            ratios=None,
            ratio_range=(0.5, 1.5),
            cat_max_ratio=1.0,
            num_workers=1,
        ),
        optim=OptimCfg(lr=1e-3, weight_decay=0.01),
        train=TrainCfg(
            max_iters=2000,
            batch_size=8,
            warmup_iters=100,
            warmup_ratio=1e-3,
            amp="auto",  # bf16 where the CPU has it natively, else fp32 (semask.hardware)
            # median_frequency_weights(camvid train, power=0.5): Pole, SignSymbol, Bicyclist are < 1.3% of pixels
            class_weight=(
                0.9049,
                0.769,
                3.7461,
                0.661,
                1.7122,
                1.1119,
                3.3582,
                2.4054,
                1.5209,
                4.3231,
                5.0963,
            ),
            eval_interval=1000,
            ckpt_interval=100,
            log_interval=10,
        ),
        eval=EvalCfg(crop=(360, 480), stride=(240, 320), scale=None, amp="auto"),
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
    for size in ("tiny", "small", "base", "large"):
        for decoder in ("m2f", "maskformer", "fapn_m2f", "msfapn_m2f"):
            arch = f"semask_swin_{size}_{decoder}"
            PRESETS[_d2_ade20k(arch).name] = lambda a=arch: _d2_ade20k(a)
        arch = f"semask_swin_{size}_m2f"
        PRESETS[_d2_cityscapes(arch).name] = lambda a=arch: _d2_cityscapes(a)
    for arch in ("semask_swin_nano_fpn", "swin_nano_fpn"):
        PRESETS[_camvid_cpu(arch).name] = lambda a=arch: _camvid_cpu(a)
    PRESETS[_camvid_demo().name] = _camvid_demo


_register()
