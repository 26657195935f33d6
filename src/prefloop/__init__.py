"""prefloop: learn from human feedback on LLM outputs.

The public API is re-exported here; everything else is implementation.
"""

from typing import TYPE_CHECKING, Any

from prefloop.errors import (
    ConflictError,
    ImportFileError,
    InvalidInputError,
    NotFoundError,
    PrefloopError,
    StoreVersionError,
    TruncationWarning,
)

if TYPE_CHECKING:
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
    "TruncationWarning",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The store (SQLAlchemy, Alembic) loads on first use, so `prefloop --help` starts fast.
    if name == "Store":
        from prefloop.store import Store

        return Store
    raise AttributeError(f"module 'prefloop' has no attribute {name!r}")
