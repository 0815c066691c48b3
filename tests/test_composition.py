"""The composition design (issue 15): models built from registered parts, one interface, loss settings that reach
every model, configs that rebuild their model, one loader, and an import graph without circles."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

import semask
from semask.backbones.mit import build_mit
from semask.backbones.swin import SwinConfig, build_swin
from semask.configs import load_config
from semask.decoders.priors import FPNPriorDecoder
from semask.decoders.semantic_fpn import SemanticFPNHead
from semask.engine.train import experiment_model, loss_settings
from semask.errors import ConfigError
from semask.losses.base import LossSettings
from semask.losses.fpn import SemanticCELoss
from semask.models import Segmenter, compose
from semask.registry import BACKBONES, DECODERS

SRC = Path(semask.__file__).parent


def _batch(k: int, size: tuple[int, int] = (64, 64), b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 3, *size, generator=g), torch.randint(0, k, (b, *size), generator=g)


def test_train_cate_weight_reaches_mask2former_models():
    cfg = load_config("semask_swin_tiny_m2f_ade20k-640_160k", ["model.arch=semask_swin_test_m2f"])
    model = experiment_model(cfg).eval()
    images, labels = _batch(150)
    with torch.no_grad():
        out = model(images)
        losses = {}
        for w in (0.4, 0.1, 0.0):
            settings = loss_settings(load_config(cfg.name, [f"train.cate_weight={w}"]).train)
            torch.manual_seed(0)  # the same point draws for every weight
            losses[w] = model.losses(out, labels, settings)
    unweighted = torch.nn.functional.cross_entropy(
        out.prior_logits, model.pad(labels.float(), 255).long(), ignore_index=255
    )
    for w, values in losses.items():
        torch.testing.assert_close(values["loss_cate"], w * unweighted)
    torch.testing.assert_close(
        losses[0.1]["loss_mask"], losses[0.4]["loss_mask"]
    )  # only the prior term moves


def test_every_loss_weight_of_the_mask_heads_reaches_the_criterion():
    cfg = load_config(
        "semask_swin_tiny_maskformer_ade20k-640_160k",
        ["model.arch=semask_swin_test_maskformer", "model.mask_weight=7.0", "model.no_object_weight=0.5"],
    )
    criterion = experiment_model(cfg).criterion
    assert criterion.weights["loss_mask"] == 7.0 and criterion.matcher.mask_weight == 7.0
    assert criterion.empty_weight[-1] == 0.5
    with pytest.raises(ConfigError, match="unknown config key 'model.mask_weight'"):
        load_config(
            "semask_swin_tiny_fpn_ade20k-512_80k", ["model.mask_weight=7.0"]
        )  # the FPN has no such weight
    m2f = experiment_model(load_config(cfg.name, ["model.arch=semask_swin_test_m2f"]))
    with pytest.raises(ConfigError, match="train.ohem_min_kept and train.class_weight"):
        m2f.criterion.check(LossSettings(ohem_min_kept=10), m2f.num_classes)


def test_fpn_loss_settings_reach_the_fpn_loss():
    model = semask.create_model("semask_swin_test_fpn", num_classes=5).eval()
    images, labels = _batch(5)
    with torch.no_grad():
        out = model(images)
        base = model.losses(out, labels)
        half = model.losses(out, labels, LossSettings(cate_weight=0.2))
        ohem = model.losses(out, labels, LossSettings(ohem_min_kept=100))
        weighted = model.losses(out, labels, LossSettings(class_weight=torch.tensor([1.0, 0, 0, 0, 0])))
    torch.testing.assert_close(half["loss_cate"], base["loss_cate"] / 2)
    assert ohem["loss_ce"] < base["loss_ce"] and weighted["loss_ce"] < base["loss_ce"]
    with pytest.raises(ConfigError, match="class_weight has 2 values but model.num_classes is 5"):
        model.losses(out, labels, LossSettings(class_weight=torch.ones(2)))


@pytest.mark.parametrize("name", semask.list_models())
def test_every_architecture_rebuilds_from_its_config_dict(name):
    with torch.device("meta"):
        model = semask.create_model(name, num_classes=7)
        stored = model.cfg.to_dict()
        assert stored["arch"] == name
        again = semask.create_model(stored["arch"], **stored)
    assert again.cfg == model.cfg
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert model.output_kind in ("logits", "scores") and model.test_pipeline in ("mmseg", "detectron2")


def test_a_model_built_by_hand_equals_the_registered_one():
    torch.manual_seed(0)
    registered = semask.create_model("semask_swin_test_fpn", num_classes=5).eval()
    torch.manual_seed(0)
    cfg = registered.cfg
    backbone = build_swin(cfg.part(SwinConfig), num_classes=5)
    head = SemanticFPNHead(backbone.channels, 5, cfg.decoder_channels, cfg.dropout, backbone.strides)
    by_hand = Segmenter(backbone, head, FPNPriorDecoder(backbone.strides), SemanticCELoss()).eval()
    assert by_hand.state_dict().keys() == registered.state_dict().keys()
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(by_hand.predict(x), registered.predict(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs a prior decoder"):
        Segmenter(backbone, head)


@pytest.mark.parametrize("decoder", ["semantic_fpn", "mask2former", "segformer_head"])
def test_semask_mit_composes_with_any_decoder_and_trains(decoder):
    """SeMask-MiT plugs into every decoder with no code for the pair: build, one training step, prediction."""
    small = dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
    small |= dict(semantic_attention=("window", "window", "global", "global"))
    head = {"mask2former": dict(conv_dim=64, mask_dim=32, hidden_dim=32, num_queries=8, nheads=4,
                                dim_feedforward=64, dec_layers=2, enc_layers=1, enc_dim_feedforward=64,
                                train_num_points=256)}.get(decoder, dict(decoder_channels=32))  # fmt: skip
    torch.manual_seed(0)
    model = compose(f"semask_mit_{decoder}", "mit", decoder, small | head, {"num_classes": 5})
    images, labels = _batch(5)
    losses = model.losses(model(images), labels)
    assert "loss_cate" in losses
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    grads = [p.grad for n, p in model.named_parameters() if "semantic_layer" in n]
    assert grads and all(g is not None for g in grads)
    assert model.eval().predict(images[:1]).shape == (1, 5, 64, 64)
    assert BACKBONES["mit"].build is build_mit and decoder in DECODERS


def test_one_loader_for_every_kind_of_spec(tmp_path):
    model = semask.create_model("semask_swin_test_fpn", num_classes=3)
    path = semask.save_model(model, tmp_path / "m.safetensors", classes=["a", "b", "c"], source="test")
    loaded, info = semask.load(path, with_info=True)
    assert info["classes"] == ["a", "b", "c"] and info["source"] == "test" and len(info["mean"]) == 3
    assert semask.load("semask_swin_test_fpn", num_classes=4).num_classes == 4  # an architecture, random init
    with pytest.raises(ConfigError, match="apply to architecture names only"):
        semask.load(path, num_classes=4)
    with pytest.raises(ConfigError, match="classes has 2 entries but the model predicts 3"):
        semask.save_model(model, tmp_path / "n.safetensors", classes=["a", "b"])
    assert dataclasses.asdict(loaded.cfg) == dataclasses.asdict(model.cfg)


def _imports(path: Path, module: str) -> set[str]:
    """The semask modules that ``module`` (file ``path``) imports, at any depth of its code."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("semask")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("semask"):
            for alias in node.names:  # ``from semask.x import y``: y may be a module
                sub = f"{node.module}.{alias.name}"
                out.add(
                    sub if (SRC.parent / Path(*sub.split("."))).with_suffix(".py").is_file() else node.module
                )
    return out - {module}


def test_no_import_circle_between_modules():
    """No module imports (directly or through others, at any depth of its code) a module that imports it back;
    package ``__init__`` files that only re-export or register are left out of the graph."""
    graph = {}
    for f in SRC.rglob("*.py"):
        if f.name == "__init__.py":
            continue
        name = ".".join(f.relative_to(SRC.parent).with_suffix("").parts)
        graph[name] = {
            m for m in _imports(f, name) if m != "semask" and not (SRC.parent / m.replace(".", "/")).is_dir()
        }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt) :] + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_engine_has_no_family_checks_and_short_functions():
    """The engine talks to models through the written interface only, in functions of at most 60 lines."""
    for f in (SRC / "engine").glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr"):
                raise AssertionError(f"{f.name}:{node.lineno}: {node.func.id} in the engine")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{f.name}:{node.lineno} {node.name} has {length} lines"
    for f in SRC.rglob("*.py"):
        assert len(f.read_text().splitlines()) <= 400, f


def test_readme_python_api_runs_as_written(tmp_path, monkeypatch):
    """The README's Python API block (composition, create_model, load) runs from the repository root."""
    readme = (SRC.parents[1] / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(SRC.parents[1])
    code = block.replace('"m.safetensors"', repr(str(tmp_path / "m.safetensors")))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["info"]["classes"] is None and scope["pred"].shape == (360, 480)
    assert scope["by_hand"].state_dict().keys() == scope["model"].state_dict().keys()
