"""prefloop: learn from human feedback on LLM outputs.

The public API is re-exported here; everything else is implementation.
"""

from prefloop.errors import (
    ConflictError,
    ImportFileError,
    InvalidInputError,
    NotFoundError,
    PrefloopError,
    StoreVersionError,
)
from prefloop.store import Store

__version__ = "0.1.0"

__all__ = [
    "ConflictError",
    "ImportFileError",
    "InvalidInputError",
    "NotFoundError",
    "PrefloopError",
    "Store",
    "StoreVersionError",
    "__version__",
]
