"""The exceptions prefloop raises. Each message names the bad value and how to fix it."""

from __future__ import annotations


class PrefloopError(Exception):
    """Base class of every error prefloop raises on purpose."""


class InvalidInputError(PrefloopError, ValueError):
    """A value given to prefloop is malformed or out of range."""


class NotFoundError(PrefloopError, LookupError):
    """A task, arm, generation or model that was named does not exist."""


class ConflictError(PrefloopError):
    """The request contradicts what the store already holds (e.g. an existing name)."""


class StoreVersionError(PrefloopError):
    """The database was made by a newer prefloop, or is not a prefloop store."""


class ImportFileError(InvalidInputError):
    """A line of an import file is malformed; ``str()`` reads ``FILE:LINE: what is wrong``."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(f"{path}:{line}: {message}")


class TruncationWarning(UserWarning):
    """Some texts or examples were longer than a model or featurizer takes and were cut."""
