"""The registry of trained reward models: rows of the store's ``reward_models`` table, or the
saved folders under a directory.

A row points at a saved folder (its ``path``) and copies what the folder's manifest says
(kind, config, data fingerprint, metrics), so ``prefloop reward list`` can show them without
opening every folder. Versions count up per name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from prefloop.errors import InvalidInputError
from prefloop.reward._manifest import MANIFEST_NAME, IncompatibleModelError, read_model_info
from prefloop.store import RewardModelRecord, Store
from prefloop.store.repo import get_task

__all__ = ["list_registered", "register_folder", "scan_folders"]


def register_folder(
    store: Store, folder: str | Path, *, name: str | None = None, task: str | None = None
) -> dict[str, Any]:
    """Record a saved model folder in the store as the next version of ``name`` (default: the
    folder's name); returns the row as a dict."""
    folder = Path(folder).resolve()
    info = read_model_info(folder)
    model_name = name or folder.name
    if not model_name.strip():
        raise InvalidInputError("a registered reward model needs a non-empty name")
    with store.session() as session:
        task_id = get_task(session, task).id if task else None
        latest = session.scalar(
            select(func.max(RewardModelRecord.version)).where(RewardModelRecord.name == model_name)
        )
        record = RewardModelRecord(
            task_id=task_id,
            name=model_name,
            version=int(latest or 0) + 1,
            kind=info.kind,
            path=str(folder),
            config={"class": info.model_class, **info.config},
            data_fingerprint=info.train.fingerprint if info.train else "",
            metrics=info.metrics,
        )
        session.add(record)
        session.flush()
        return _row(record, task)


def _row(record: RewardModelRecord, task: str | None) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "version": record.version,
        "kind": record.kind,
        "task": task,
        "path": record.path,
        "class": record.config.get("class"),
        "data_fingerprint": record.data_fingerprint,
        "metrics": record.metrics,
        "created_at": record.created_at.isoformat() if record.created_at else None,
    }


def list_registered(store: Store, *, task: str | None = None) -> list[dict[str, Any]]:
    """The registered models, newest first (optionally only those of ``task``)."""
    from prefloop.store import Task

    with store.session(readonly=True) as session:
        query = select(RewardModelRecord, Task.name).outerjoin(
            Task, Task.id == RewardModelRecord.task_id
        )
        if task is not None:
            query = query.where(RewardModelRecord.task_id == get_task(session, task).id)
        rows = session.execute(
            query.order_by(RewardModelRecord.created_at.desc(), RewardModelRecord.id.desc())
        ).all()
        return [_row(record, task_name) for record, task_name in rows]


def scan_folders(root: str | Path) -> list[dict[str, Any]]:
    """Every saved model folder under ``root`` (``root`` itself included), by path."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder")
    out: list[dict[str, Any]] = []
    for manifest in sorted(root.rglob(MANIFEST_NAME)):
        folder = manifest.parent
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue  # temporary folders of a save in progress
        try:
            info = read_model_info(folder)
        except IncompatibleModelError as exc:
            out.append({"path": str(folder), "error": str(exc)})
            continue
        out.append(
            {
                "name": folder.name,
                "path": str(folder),
                "kind": info.kind,
                "class": info.model_class,
                "data_fingerprint": info.train.fingerprint if info.train else "",
                "n_train": info.train.n if info.train else None,
                "metrics": info.metrics,
                "versions": info.versions,
                "created_at": info.created_at,
            }
        )
    return out
