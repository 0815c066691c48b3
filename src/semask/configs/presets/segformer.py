"""SegFormer and SeMask-MiT presets (SeMask paper Sec. 3, Table 6): the official NVlabs SegFormer recipes
(``local_configs/segformer/B*/segformer.b*.{512x512.ade,1024x1024.city}.160k.py``, as in mmseg 1.x
``configs/segformer``), and a CamVid CPU recipe (not a paper row).

Recipe: AdamW lr 6e-5, weight decay 0.01 (none on ``norm`` parameters), head learning rate x10 (``custom_keys
{'head': lr_mult=10}``), linear warmup 1500 iterations from 1e-6, poly power 1.0 to 0, 160k iterations; ADE20K
batch 16 (8 GPUs x 2), crop 512 (B5: 640), resize ratio 0.5-2.0 of (2048, 512), whole-image test; Cityscapes
batch 8 (8 x 1), crop 1024, ratio 0.5-2.0 of (2048, 1024), sliding test 1024x1024 stride 768. Start from the
ImageNet MiT: ``--set train.pretrained=mit_b*.pth`` (NVlabs or Hugging Face ``nvidia/mit-b*``). The NVlabs ADE20K
test resize also rounds the image to a multiple of 32 (``AlignedResize``); mmseg 1.x, followed here, does not.
"""

from semask.configs.presets import register
from semask.configs.presets.camvid import camvid_cpu
from semask.configs.schema import DataCfg, EvalCfg, ExperimentCfg, OptimCfg, TrainCfg

VARIANTS = ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5")


def _recipe(batch_size: int) -> tuple[OptimCfg, TrainCfg]:
    optim = OptimCfg(lr=6e-5, weight_decay=0.01, decoder_lr_mult=10.0)
    train = TrainCfg(
        max_iters=160000,
        batch_size=batch_size,
        warmup_iters=1500,
        warmup_ratio=1e-6,
        power=1.0,
        eval_interval=16000,
        ckpt_interval=16000,
    )
    return optim, train


def _ade20k(arch: str, variant: str) -> ExperimentCfg:
    crop = 640 if variant == "mit_b5" else 512
    optim, train = _recipe(batch_size=16)
    return ExperimentCfg(
        name=f"{arch}_ade20k-{crop}_160k",
        model=dict(arch=arch, num_classes=150),
        data=DataCfg(
            dataset="ade20k",
            crop_size=(crop, crop),
            scale=(2048, crop),
            ratios=None,
            ratio_range=(0.5, 2.0),
            cat_max_ratio=0.75,
        ),
        optim=optim,
        train=train,
        eval=EvalCfg(scale=(2048, crop)),
    )


def _cityscapes(arch: str, variant: str) -> ExperimentCfg:
    optim, train = _recipe(batch_size=8)
    return ExperimentCfg(
        name=f"{arch}_cityscapes-1024_160k",
        model=dict(arch=arch, num_classes=19),
        data=DataCfg(
            dataset="cityscapes",
            crop_size=(1024, 1024),
            scale=(2048, 1024),
            ratios=None,
            ratio_range=(0.5, 2.0),
            cat_max_ratio=0.75,
        ),
        optim=optim,
        train=train,
        eval=EvalCfg(mode="slide", crop=(1024, 1024), stride=(768, 768), scale=(2048, 1024)),
    )


def _camvid(arch: str) -> ExperimentCfg:
    """SegFormer-B0 / SeMask-MiT-B0 on CamVid from scratch: the Swin-nano CPU recipe with SegFormer's own head
    width (E = 256 for B0)."""
    cfg = camvid_cpu(arch)
    cfg.model = dict(arch=arch, num_classes=11, drop_path_rate=0.0)
    return cfg


for _variant in VARIANTS:
    for _arch in (f"segformer_{_variant}", f"semask_{_variant}"):
        for _build in (_ade20k, _cityscapes):
            register(lambda b=_build, a=_arch, v=_variant: b(a, v))
for _arch in ("segformer_mit_b0", "semask_mit_b0"):
    register(lambda a=_arch: _camvid(a))
