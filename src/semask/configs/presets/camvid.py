"""CPU presets for CamVid (not paper rows): from-scratch training on a 2-core CPU, and the README demo."""

from semask.configs.presets import register
from semask.configs.schema import DataCfg, EvalCfg, ExperimentCfg, OptimCfg, TrainCfg


def camvid_cpu(arch: str) -> ExperimentCfg:
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
    cfg = camvid_cpu("semask_swin_nano_fpn")
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


for _arch in ("semask_swin_nano_fpn", "swin_nano_fpn"):
    register(lambda a=_arch: camvid_cpu(a))
register(_camvid_demo)
