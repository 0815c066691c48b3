"""Presets of the SeMask detectron2 projects (Mask2Former, MaskFormer, FaPN / MSFaPN Mask2Former; paper Tables 3-4,
recipes of SPEC A3 'D2'). They exist for every Swin size (the paper trains only L)."""

from semask.configs.presets import register
from semask.configs.schema import DataCfg, EvalCfg, ExperimentCfg, OptimCfg, TrainCfg


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


for _size in ("tiny", "small", "base", "large"):
    for _decoder in ("m2f", "maskformer", "fapn_m2f", "msfapn_m2f"):
        register(lambda a=f"semask_swin_{_size}_{_decoder}": _d2_ade20k(a))
    register(lambda a=f"semask_swin_{_size}_m2f": _d2_cityscapes(a))
