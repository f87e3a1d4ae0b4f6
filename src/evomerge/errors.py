"""User-facing errors.

An ``EvomergeError`` is a mistake the user can fix (bad config, mismatched models, bad value).
The CLI prints its message as one line and exits with code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class EvomergeError(Exception):
    """A user mistake, reported as one clear line."""


class ConfigError(EvomergeError):
    """The recipe or run configuration is invalid."""


class ModelError(EvomergeError):
    """A model directory or checkpoint file cannot be used as given."""
