"""Uploading semask models to the Hugging Face Hub (``semask push``): the repository files (weights, sidecar,
generated model card) staged in a folder, then sent in one commit with ``huggingface_hub`` (the ``hub`` extra).
The repository layout is :mod:`semask.hub`'s, which reads it back through ``hf://ORG/REPO``."""

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semask.errors import CheckpointError
from semask.hub import CARD, PREFIX, SIDECAR, WEIGHTS, parse_spec, require_hub
from semask.weights.files import _one_line
from semask.weights.load import load, run_checkpoint, save_model


def run_metrics(checkpoint: Path) -> dict[str, dict[str, float]]:
    """The evaluations in the ``metrics.jsonl`` beside a run's checkpoint: ``{"best": ..., "last": ...}``, each
    ``{"iter", "aAcc", "mIoU", "mAcc"}`` (best: highest mIoU); ``{}`` when there is none. Unreadable lines
    (one cut by a killed run) are skipped."""
    log = checkpoint.parent / "metrics.jsonl" if checkpoint.is_file() else checkpoint / "metrics.jsonl"
    if not log.is_file():
        return {}
    evals = []
    for line in log.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a killed run
            continue
        if isinstance(row, dict) and {"iter", "aAcc", "mIoU", "mAcc"} <= row.keys():
            evals.append(row)
    if not evals:
        return {}
    return {"best": max(evals, key=lambda row: row["mIoU"]), "last": evals[-1]}


def model_card(repo_id: str, config: dict[str, Any], info: dict[str, Any], metrics: dict[str, dict]) -> str:
    """The ``README.md`` of a model repository: Hub metadata (library, task, tags, the reported mIoU) and
    sections on use, config, classes, source checkpoint and metrics."""
    hf = require_hub()
    dataset = info.get("dataset") or "unknown"
    reported = metrics.get("best" if str(info.get("source", "")).endswith("best.pt") else "last")
    evals = reported and [
        hf.EvalResult("image-segmentation", dataset, dataset, "mIoU", round(reported["mIoU"], 2))
    ]
    data = hf.ModelCardData(
        library_name="semask",
        pipeline_tag="image-segmentation",
        tags=["semantic-segmentation", "semask", config["arch"]],
        model_name=repo_id,
        eval_results=evals or None,
    )
    classes = info.get("classes") or [f"class {k}" for k in range(config["num_classes"])]
    palette = info.get("palette") or [None] * len(classes)
    rows = [
        f"| {k} | {name} | {tuple(c) if c else ''} |"
        for k, (name, c) in enumerate(zip(classes, palette, strict=True))
    ]
    lines = [
        f"# {repo_id}\n",
        f"SeMask semantic segmentation model `{config['arch']}` for [semask](https://pypi.org/project/semask/), "
        f"{len(classes)} classes (dataset: {dataset}).\n",
        "## Use\n",
        f'```python\nimport semask\n\nmodel, info = semask.load("hf://{repo_id}", with_info=True)\n'
        "label = semask.Predictor(model).predict(rgb)  # (H, W, 3) uint8 RGB -> (H, W) class indices\n```\n",
        f"or `semask predict hf://{repo_id} IMAGE --out DIR`, `semask serve hf://{repo_id}`.\n",
        f"Files: `{WEIGHTS}` (weights) and `{SIDECAR}` (semask's config: model, classes, palette, normalisation).\n",
        "## Config\n",
        f"```json\n{json.dumps(config, indent=2)}\n```\n",
        "## Classes\n",
        "| index | class | colour |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n",
        "## Source checkpoint\n",
        f"`{info.get('source') or 'not recorded'}`\n",
        "## Metrics\n",
        _metrics_table(metrics),
    ]
    return hf.ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)).content


def _metrics_table(metrics: dict[str, dict]) -> str:
    if not metrics:
        return "None recorded (no metrics.jsonl beside the source checkpoint).\n"
    rows = [
        f"| {which} | {m['iter']} | {m['mIoU']:.2f} | {m['mAcc']:.2f} | {m['aAcc']:.2f} |"
        for which, m in metrics.items()
    ]
    head = "Validation during training (the run's `metrics.jsonl`):\n\n"
    return (
        head
        + "| evaluation | iteration | mIoU | mAcc | aAcc |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n"
    )


def stage(source: str | Path, folder: str | Path, repo_id: str) -> list[Path]:
    """Write the files of a model repository for ``source`` into ``folder``: the weights as
    ``model.safetensors`` + ``model.json`` (loaded strictly with :func:`semask.load`, so only valid weights are
    shared) and the model card ``README.md``.

    Args:
        source: a run folder, a training checkpoint ``.pt`` or a ``.safetensors`` with its sidecar.
        repo_id: ``ORG/REPO``, named in the card.

    Returns:
        The three files written.

    Raises:
        ConfigError, CheckpointError: as :func:`semask.load`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, info = load(source, with_info=True)
    checkpoint = run_checkpoint(Path(source))
    info = info | {"source": info.get("source") or str(checkpoint)}
    meta = {k: info.get(k) for k in ("classes", "palette", "source", "dataset")}
    weights = save_model(model, folder / WEIGHTS, **meta)
    card = folder / CARD
    card.write_text(model_card(repo_id, model.cfg.to_dict(), info, run_metrics(checkpoint)))
    return [weights, folder / SIDECAR, card]


def upload_plan(files: Sequence[Path]) -> list:
    """``huggingface_hub.CommitOperationAdd`` of each file at the repository root (each computes the size and
    SHA-256 that the upload sends)."""
    hf = require_hub()
    return [hf.CommitOperationAdd(path_in_repo=f.name, path_or_fileobj=str(f)) for f in files]


def push(
    source: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    message: str | None = None,
    dry_run: bool = False,
    folder: str | Path | None = None,
) -> list[str]:
    """Upload ``source`` to ``repo_id`` as one commit (the repository is created when missing); the token is
    ``huggingface_hub``'s (``HF_TOKEN`` or ``hf auth login``).

    Args:
        source: as :func:`stage`.
        revision: branch to commit to (default ``main``).
        private: create the repository private.
        dry_run: stage and plan only; nothing is sent.
        folder: stage the files there (kept) instead of in a temporary folder.

    Returns:
        Lines that say what was (or, with ``dry_run``, would be) uploaded: one per file (name, bytes,
        SHA-256), then the commit URL or ``dry run: nothing uploaded``.

    Raises:
        ConfigError, CheckpointError: as :func:`stage`; a malformed ``repo_id``.
        CheckpointError: the Hub refused or could not be reached (one line).
    """
    parse_spec(PREFIX + repo_id)
    hf = require_hub()
    with tempfile.TemporaryDirectory(prefix="semask-push-") as tmp:
        operations = upload_plan(stage(source, folder or tmp, repo_id))
        lines = [
            f"{op.path_in_repo}  {op.upload_info.size} bytes  sha256 {op.upload_info.sha256.hex()}"
            for op in operations
        ]
        if dry_run:
            return [*lines, f"dry run: nothing uploaded to {repo_id}"]
        try:
            api = hf.HfApi()
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.create_commit(
                repo_id, operations, commit_message=message or "Upload semask model", revision=revision
            )
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{repo_id}: upload to the Hub failed: {_one_line(e)}") from None
    return [*lines, f"uploaded: {commit.commit_url}"]
