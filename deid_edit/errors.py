"""Errors of deid-edit.

Every failure the core can foresee is a ``DeidError`` subclass whose message is one actionable
line: the file or option concerned, what was wrong, what to do. The core raises them and never
prints or exits; ``cli.main()`` maps them to exit code 1 and one line on stderr.
"""

from __future__ import annotations


class DeidError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1


class InputError(DeidError):
    """The input file is missing, unreadable, not a video, or otherwise unusable."""


class DecodeError(DeidError):
    """The input opened but could not be decoded completely (truncated, corrupt)."""


class EncodeError(DeidError):
    """The output could not be written (codec, container, disk, permissions)."""


class ModelError(DeidError):
    """A model file is missing, corrupt, or cannot run on the chosen device."""


class PlanError(DeidError):
    """A plan file is unreadable, of an unknown schema, or belongs to another video."""


class ConfigError(DeidError):
    """An option has a value outside what is allowed."""

    exit_code = 2
