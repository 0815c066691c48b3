"""One preset per paper row plus CPU presets for CamVid, one module per family; each module registers its presets
in :data:`PRESETS` with :func:`register`.

Grammar (mmseg, simplified): ``{arch}_{dataset}-{crop}_{schedule}``, e.g. ``semask_swin_tiny_fpn_ade20k-512_80k``.
"""

from collections.abc import Callable

from semask.configs.schema import ExperimentCfg

PRESETS: dict[str, Callable[[], ExperimentCfg]] = {}


def register(build: Callable[[], ExperimentCfg]) -> None:
    """Add the preset that ``build()`` makes under its ``name``. Raises ValueError on a duplicate name."""
    name = build().name
    if name in PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    PRESETS[name] = build


from semask.configs.presets import (  # noqa: E402, F401  (register the presets)
    camvid,
    d2,
    m2f_plain,
    maskformer_mmseg,
    segformer,
    swin_fpn,
)
