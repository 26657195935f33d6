"""A per-process cache of tasks and their active arms, for the select and feedback hot path.

Every ``/v1/select`` and ``/v1/feedback`` looks its task up by name, and every decision needs
the task's active arms: two to three queries per request for rows that change rarely. The
:class:`Catalog` keeps them for ``ttl`` seconds. The routes that change tasks or arms in this
process (create, label, retire) call :meth:`Catalog.invalidate` after they commit, so this
process sees its own changes at once; a change made elsewhere (the CLI, another worker) is
seen after at most ``ttl`` seconds. ``ttl=0`` turns the cache off.

The cached rows are ORM objects detached from the session that read them (so that a rollback of
that request cannot expire them): the hot path only reads their columns (ids, names, templates,
scale, reward rules), never adds them to a session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from prefloop.store import Arm, Task, repo

__all__ = ["Catalog", "CatalogEntry"]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A task and its active arms (oldest first), as read at ``loaded_at`` (monotonic s)."""

    task: Task
    active_arms: Sequence[Arm]
    loaded_at: float


class Catalog:
    """Tasks and their active arms by task name, each kept for at most ``ttl`` seconds."""

    def __init__(self, *, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, CatalogEntry] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def entry(self, session: Session, task_name: str) -> CatalogEntry:
        """The task called ``task_name`` and its active arms (:class:`NotFoundError` if none)."""
        now = time.monotonic()
        cached = self._entries.get(task_name)
        if cached is not None and now - cached.loaded_at < self.ttl:
            return cached
        with self._lock:
            generation = self._generation
        task = repo.get_task(session, task_name)
        arms = tuple(repo.active_arms(session, task))
        # detached at once: a rollback of this request's transaction would expire them
        for row in (task, *arms):
            session.expunge(row)
        fresh = CatalogEntry(task, arms, now)
        with self._lock:
            if self.ttl > 0 and generation == self._generation:  # no invalidation meanwhile
                self._entries[task_name] = fresh
        return fresh

    def cached(self, task_name: str) -> CatalogEntry | None:
        """The entry of ``task_name`` if one younger than ``ttl`` is kept (no database)."""
        cached = self._entries.get(task_name)
        if cached is not None and time.monotonic() - cached.loaded_at < self.ttl:
            return cached
        return None

    def current(
        self, task_name: str, read: Callable[[], AbstractContextManager[Session]]
    ) -> CatalogEntry:
        """The entry of ``task_name``: the kept one while younger than ``ttl``, else read
        afresh in a read transaction of its own (``read()`` opens it)."""
        cached = self.cached(task_name)
        if cached is not None:
            return cached
        with read() as session:
            return self.entry(session, task_name)

    def task(self, session: Session, task_name: str) -> Task:
        return self.entry(session, task_name).task

    def invalidate(self) -> None:
        """Forget everything (after a task or arm changed in this process)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
