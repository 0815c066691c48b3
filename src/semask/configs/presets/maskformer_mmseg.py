"""MMSegmentation 1.x MaskFormer presets (mmseg MaskFormer model zoo: R-50/101-D32 44.29 / 45.11, Swin-T/S 46.69 /
49.36 mIoU on ADE20K), from the shipped configs ``maskformer_{r50-d32,r101-d32,swin-t_upernet,swin-s_upernet}_
8xb2-160k_ade20k-512x512.py`` and their ``_base_`` ADE20K dataset, plus a small CPU CamVid preset of the R-50
model (not a zoo row).

Recipes (``recipes/`` of the fixture folder):

- data (``_base_/datasets/ade20k.py``): RandomResize (2048, 512) with ratio_range (0.5, 2.0), RandomCrop 512 with
  cat_max_ratio 0.75, flip 0.5, PhotoMetricDistortion; test Resize (2048, 512) keep-ratio, whole image, TTA ratios
  0.5-1.75 + flip; mmseg IoU; batch 16 (8 GPUs x 2), 160k iterations, checkpoints/eval every 16k.
- ResNet: AdamW lr 1e-4, weight decay 1e-4 on every parameter (``param_rules="none"``), backbone lr x0.1, grad
  clip 0.01 (L2), PolyLR power 0.9 to 0, no warmup.
- Swin: AdamW lr 6e-5, weight decay 0.01 except the backbone norms, position tables and ``query_embed``
  (``param_rules="mmseg-maskformer"``; the decoder's norms decay), backbone lr x1, grad clip 0.01, LinearLR warmup
  1500 iterations from 1e-6, then PolyLR power 1.0 to 0 over the remaining iterations (``poly_after_warmup``).
"""

from semask.configs.presets import register
from semask.configs.schema import DataCfg, EvalCfg, ExperimentCfg, OptimCfg, TrainCfg

ROWS = {
    "maskformer_r50_d32": "maskformer_r50-d32",
    "maskformer_r101_d32": "maskformer_r101-d32",
    "maskformer_swin_t": "maskformer_swin-t",
    "maskformer_swin_s": "maskformer_swin-s",
}
"""Registered architecture -> preset name stem (mmseg config names)."""


def mmseg_maskformer_ade20k(arch: str) -> ExperimentCfg:
    """The mmseg MaskFormer ADE20K 512x512 160k recipe of ``arch`` (a key of :data:`ROWS`)."""
    swin = "swin" in arch
    return ExperimentCfg(
        name=f"{ROWS[arch]}_ade20k-512_160k",
        model=dict(arch=arch, num_classes=150),
        data=DataCfg(
            dataset="ade20k",
            crop_size=(512, 512),
            scale=(2048, 512),
            ratios=None,
            ratio_range=(0.5, 2.0),
            cat_max_ratio=0.75,
        ),
        optim=OptimCfg(
            lr=6e-5 if swin else 1e-4,
            weight_decay=0.01 if swin else 1e-4,
            grad_clip=0.01,
            backbone_lr_mult=1.0 if swin else 0.1,
            param_rules="mmseg-maskformer" if swin else "none",
        ),
        train=TrainCfg(
            max_iters=160000,
            batch_size=16,
            warmup_iters=1500 if swin else 0,
            warmup_ratio=1e-6 if swin else 1.0,
            power=1.0 if swin else 0.9,
            poly_after_warmup=swin,
            eval_interval=16000,
            ckpt_interval=16000,
        ),
        eval=EvalCfg(mode="whole", crop=(512, 512), scale=(2048, 512), flip=True),
    )


def mmseg_maskformer_camvid_cpu() -> ExperimentCfg:
    """A narrow MaskFormer R-50 (widths / 4, 2 decoder layers, 20 queries) from scratch on CamVid on a 2-core
    CPU: the convergence check of the family (not a zoo row)."""
    return ExperimentCfg(
        name="maskformer_r50_d32_camvid-360x480_cpu",
        model=dict(
            arch="maskformer_r50_d32",
            num_classes=11,
            stem_channels=16,
            base_channels=16,
            norm_eval=False,
            feat_channels=64,
            out_channels=64,
            num_queries=20,
            dim_feedforward=256,
            dec_layers=2,
        ),
        data=DataCfg(
            dataset="camvid",
            crop_size=(256, 320),
            scale=(480, 360),
            ratios=None,
            ratio_range=(0.5, 1.5),
            cat_max_ratio=1.0,
            num_workers=1,
        ),
        optim=OptimCfg(lr=1e-3, weight_decay=1e-4, grad_clip=0.01),
        train=TrainCfg(
            max_iters=2000,
            batch_size=8,
            warmup_iters=100,
            warmup_ratio=1e-3,
            power=0.9,
            eval_interval=1000,
            ckpt_interval=100,
            log_interval=10,
        ),
        eval=EvalCfg(crop=(360, 480), stride=(240, 320), scale=None),
    )


for _arch in ROWS:
    register(lambda a=_arch: mmseg_maskformer_ade20k(a))
register(mmseg_maskformer_camvid_cpu)
