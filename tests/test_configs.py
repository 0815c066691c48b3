"""Presets: every one loads and builds; overrides are type-checked; JSON dumps round-trip."""

import re
from pathlib import Path

import pytest
import torch

import semask
from semask.configs import ExperimentCfg, list_configs, load_config
from semask.errors import ConfigError


def test_every_paper_row_has_a_preset():
    for size in ("tiny", "small", "base", "large"):
        for prefix in ("semask_", ""):
            names = list_configs(f"{prefix}swin_{size}_fpn_*")
            assert {n.split("_fpn_")[1].split("-")[0] for n in names} >= {"ade20k", "cityscapes", "coco"}


@pytest.mark.parametrize("name", list_configs())
def test_preset_builds_on_meta_and_round_trips(name, tmp_path):
    cfg = load_config(name)
    with torch.device("meta"):
        model = semask.create_model(cfg.model["arch"], num_classes=cfg.model["num_classes"])
    assert model.num_classes == cfg.model["num_classes"]
    cfg.dump(tmp_path / "config.json")
    assert load_config(str(tmp_path / "config.json")) == cfg


def test_recipes_match_spec():
    t = load_config("semask_swin_tiny_fpn_ade20k-512_80k")
    assert (t.optim.lr, t.optim.weight_decay, t.train.batch_size, t.data.cat_max_ratio) == (
        1e-4,
        1e-4,
        16,
        0.75,
    )
    assert t.data.ratios == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and t.train.ohem_min_kept is None
    large = load_config("semask_swin_large_fpn_ade20k-640_80k")
    assert large.data.crop_size == (640, 640) and large.train.ohem_min_kept == 100000
    city = load_config("semask_swin_base_fpn_cityscapes-768_80k")
    assert (city.optim.lr, city.optim.weight_decay, city.train.warmup_ratio) == (1e-3, 0.05, 1e-6)
    assert city.data.ratio_range == (0.5, 2.0) and city.train.batch_size == 8
    coco = load_config("semask_swin_small_fpn_coco-stuff-10k-512_80k")
    assert coco.model["num_classes"] == 171 and coco.data.val_split == "test"


def test_overrides_are_type_checked():
    cfg = load_config(
        "semask_swin_tiny_fpn_ade20k-512_80k", ["train.max_iters=10", "optim.lr=6e-5", "data.ratios=None"]
    )
    assert cfg.train.max_iters == 10 and cfg.optim.lr == 6e-5 and cfg.data.ratios is None
    cfg = load_config("semask_swin_tiny_fpn_ade20k-512_80k", ["optim.lr=1", "train.amp=bf16"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.train.amp == "bf16"
    for bad in ["train.max_iters=1.5", "optim.nope=1", "nope.lr=1", "data.crop_size=(1,2,3)", "lr"]:
        with pytest.raises(ConfigError):
            load_config("semask_swin_tiny_fpn_ade20k-512_80k", [bad])
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no_such_preset")


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError):
        ExperimentCfg.from_dict({"train": {"max_itrs": 3}})


def test_choice_fields_are_checked():
    """``train.amp`` and ``eval.metric`` accept only their listed values (one error naming the key and choices)."""
    cfg = load_config("semask_swin_nano_fpn_camvid-demo", ["eval.metric=detectron2", "train.amp=auto"])
    assert (cfg.eval.metric, cfg.train.amp) == ("detectron2", "auto")
    with pytest.raises(ConfigError, match="eval.metric: 'foo' is not one of 'mmseg', 'detectron2'"):
        load_config("semask_swin_nano_fpn_camvid-demo", ["eval.metric=foo"])
    with pytest.raises(ConfigError, match="train.amp: 'fp8' is not one of"):
        load_config("semask_swin_nano_fpn_camvid-demo", ["train.amp=fp8"])


def test_every_preset_the_readme_trains_exists():
    """``semask train NAME`` in README.md and docs/ names a registered preset (a renamed preset breaks no doc)."""
    root = Path(__file__).resolve().parents[1]
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    named = {m for p in texts for m in re.findall(r"semask train ([a-z][\w.-]+_[\w.-]+)", p.read_text())}
    assert len(named) >= 4 and named <= set(list_configs()), sorted(named - set(list_configs()))
