"""Sharing semask models through the Hugging Face Hub (needs the ``hub`` extra: ``pip install "semask[hub]"``).

A model repository holds ``model.safetensors``, its sidecar ``model.json`` (the semask format:
:mod:`semask.weights.load`) and a generated model card ``README.md`` (config, classes, source checkpoint,
metrics). :func:`download` fetches the first two through ``huggingface_hub`` (its cache, ``HF_HUB_CACHE``, and
``HF_HUB_OFFLINE=1`` work as usual), so ``semask.load("hf://ORG/REPO[@rev]")`` and ``semask predict
hf://ORG/REPO ...`` read them; :func:`semask.hub_push.push` uploads a run, checkpoint or weight file in one
commit.
"""

from pathlib import Path
from types import ModuleType

from semask.errors import CheckpointError, ConfigError
from semask.weights.files import _one_line

PREFIX = "hf://"
WEIGHTS, SIDECAR, CARD = "model.safetensors", "model.json", "README.md"


def require_hub() -> ModuleType:
    """The ``huggingface_hub`` module; ConfigError (how to install it) when it is missing."""
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError('Hugging Face Hub models need the hub extra: pip install "semask[hub]"') from None
    return huggingface_hub


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"hf://ORG/REPO@rev"`` -> ``("ORG/REPO", "rev")``; the revision (branch, tag or commit) may be omitted.

    Raises:
        ConfigError: not of that form, or a repository id the Hub does not accept.
    """
    repo_id, _, revision = spec.removeprefix(PREFIX).partition("@")
    require_hub()
    from huggingface_hub.utils import validate_repo_id

    try:
        if not spec.startswith(PREFIX) or repo_id.count("/") != 1:
            raise ValueError("expected hf://ORG/REPO or hf://ORG/REPO@REVISION")
        validate_repo_id(repo_id)
    except ValueError as e:
        raise ConfigError(f"{spec!r}: not a Hub model ({_one_line(e)})") from None
    return repo_id, revision or None


def download(spec: str) -> Path:
    """Fetch ``model.safetensors`` and ``model.json`` of ``spec`` (``hf://ORG/REPO[@rev]``) into the
    ``huggingface_hub`` cache (or find them there, as with ``HF_HUB_OFFLINE=1``).

    Returns:
        The cached ``model.safetensors``; its sidecar lies beside it (one snapshot folder).

    Raises:
        ConfigError: a malformed spec, or ``huggingface_hub`` missing.
        CheckpointError: one line naming ``spec``: unknown repository, revision or file, no network and not
            in the cache, or any other Hub error.
    """
    repo_id, revision = parse_spec(spec)
    hf = require_hub()
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf.hf_hub_download(repo_id, SIDECAR, revision=revision)
        return Path(hf.hf_hub_download(repo_id, WEIGHTS, revision=revision))
    except (OSError, EntryNotFoundError, ValueError) as e:
        raise CheckpointError(
            f"{spec}: cannot get {WEIGHTS} + {SIDECAR} from the Hub: {_one_line(e)}"
        ) from None
