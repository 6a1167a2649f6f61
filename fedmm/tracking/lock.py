"""Locks that make registry changes serialisable across processes.

A promotion reads the champion, scores both models and moves aliases; two promotions
interleaving there lose one of them. :func:`registry_lock` holds one lock per registered
model for the whole read-score-move:

- SQLite store (the embedded default): a file lock beside the database file;
- PostgreSQL store (``postgresql://...`` tracking URI): a session-level advisory lock on
  that database (released by PostgreSQL if the process dies);
- an MLflow tracking server (``http(s)://...``): an advisory lock on the server's
  PostgreSQL backend store, named by ``FEDMM_REGISTRY_LOCK_URI`` (``make server`` sets it).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_URI_ENV = "FEDMM_REGISTRY_LOCK_URI"
DEFAULT_TIMEOUT_S = 900.0


class LockError(RuntimeError):
    """The registry lock cannot be taken (unsupported backend, or timed out)."""


def _key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(hashlib.sha256(f"fedmm.registry:{name}".encode()).digest()[:8], "big", signed=True)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextmanager
def file_lock(path: Path, timeout: float = DEFAULT_TIMEOUT_S, what: str = "lock") -> Iterator[None]:
    """An exclusive lock on ``path`` (created with its folder), across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=timeout):
            yield
    except Timeout:
        raise LockError(f"could not take the {what} {path} within {timeout:.0f} s") from None


@contextmanager
def advisory_lock(database_uri: str, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """A PostgreSQL session-level advisory lock keyed by ``name``, on its own connection."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(database_uri, poolclass=NullPool)
    key = _key(name)
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + timeout
            while not connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                connection.rollback()
                if time.monotonic() > deadline:
                    raise LockError(f"could not take the registry lock for {name!r} within {timeout:.0f} s")
                time.sleep(0.05)
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
    finally:
        engine.dispose()


def lock_description(tracking_uri: str) -> str:
    """Which lock serialises registry changes for this tracking URI (for messages and reports)."""
    if sqlite_path(tracking_uri) is not None:
        return "file lock beside the SQLite store"
    if tracking_uri.startswith("postgresql"):
        return "PostgreSQL advisory lock on the tracking store"
    if os.environ.get(LOCK_URI_ENV, "").startswith("postgresql"):
        return f"PostgreSQL advisory lock on {LOCK_URI_ENV}"
    return "none"


def check_supported(tracking_uri: str) -> None:
    """Raise :class:`LockError` now when promotions on this tracking URI could not be serialised."""
    if lock_description(tracking_uri) == "none":
        raise LockError(_unsupported(tracking_uri))


def _unsupported(tracking_uri: str) -> str:
    return (
        f"promotions on tracking server {tracking_uri} cannot be serialised: set {LOCK_URI_ENV} to the "
        "server's PostgreSQL backend store (postgresql://...), as `make server` prints"
    )


@contextmanager
def registry_lock(tracking_uri: str, model_name: str, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock of one registered model (see the module docstring for the backends)."""
    database = sqlite_path(tracking_uri)
    if database is not None:
        digest = hashlib.sha256(model_name.encode()).hexdigest()[:16]
        with file_lock(database.with_name(f"{database.name}.locks") / f"{digest}.lock", timeout, "registry lock"):
            yield
        return
    lock_uri = tracking_uri if tracking_uri.startswith("postgresql") else os.environ.get(LOCK_URI_ENV)
    if not lock_uri or not lock_uri.startswith("postgresql"):
        raise LockError(_unsupported(tracking_uri))
    with advisory_lock(lock_uri, model_name, timeout):
        yield
