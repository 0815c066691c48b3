"""Exceptions with messages meant for users: each names the file or setting at fault and the problem."""


class SemaskError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero, without a traceback."""


class DataError(SemaskError):
    """An unreadable, missing or inconsistent image, label or dataset folder."""


class CheckpointError(SemaskError):
    """A checkpoint that cannot be read, converted or loaded into the requested model."""


class ConfigError(SemaskError):
    """An unknown preset, a bad ``--set key=value`` override or an inconsistent configuration."""
