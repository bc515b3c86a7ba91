"""Typed errors for user mistakes.

Every error a user can cause (a bad flag, a malformed file, a mismatched checkpoint) raises a
subclass of :class:`MegatronMetaError`. The CLI catches that base class and prints its message
without a traceback; anything else is a bug and keeps its traceback.
"""


class MegatronMetaError(Exception):
    """Base class of all user-facing errors."""


class ConfigError(MegatronMetaError):
    """A flag, recipe or parallel layout is invalid. The message names the flag and the fix."""


class DataError(MegatronMetaError):
    """An input file or record is malformed. The message names the file and line (or id)."""


class CheckpointError(MegatronMetaError):
    """A checkpoint is missing, damaged or belongs to another model."""


class OutputError(MegatronMetaError):
    """An output cannot be written (a full disk): the message names it and the space it needed,
    and nothing half-written is left (see :mod:`megatron_meta.outputs`)."""
