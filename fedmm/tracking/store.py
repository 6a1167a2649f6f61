"""Up-front checks of the MLflow tracking store, so that an unusable one is one line and exit 2.

Without them a ``mlflow.db`` that is not an SQLite database fails deep inside SQLAlchemy
(exit 3, a multi-line message), and an unreachable PostgreSQL or tracking server is
retried by MLflow for minutes before it fails the same way.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from fedmm.errors import UserError
from fedmm.tracking import lock

SQLITE_HEADER = b"SQLite format 3\0"
CONNECT_TIMEOUT_S = 10
SUPPORTED = ("sqlite", "postgresql", "mysql", "http", "https")


class StoreError(UserError):
    """The tracking store (``$FEDMM_HOME/mlflow.db`` or ``MLFLOW_TRACKING_URI``) cannot be used."""


def check_store(uri: str) -> None:
    """Raise :class:`StoreError` when the tracking store at ``uri`` cannot be used (checked within seconds)."""
    database = lock.sqlite_path(uri)
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if database is not None:
        _check_sqlite(database)
    elif scheme in ("postgresql", "mysql"):
        _check_database(uri)
    elif scheme in ("http", "https"):
        _check_server(uri)
    else:
        raise StoreError(f"MLFLOW_TRACKING_URI={uri!r} is not a store fedmm can use: give one of "
                         f"{', '.join(f'{s}://...' for s in SUPPORTED)}, or unset it for $FEDMM_HOME/mlflow.db")


def _check_sqlite(database) -> None:
    if not database.is_file() or database.stat().st_size == 0:
        return
    with open(database, "rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise StoreError(f"{database} is not an SQLite database (an MLflow store): move it away, or set FEDMM_HOME "
                         "to another folder")


def _check_database(uri: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    shown = make_url(uri).render_as_string(hide_password=True)
    engine = create_engine(uri, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        engine.connect().close()
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise StoreError(f"the tracking store {shown} cannot be reached ({reason}): start it (make server) "
                         "or fix MLFLOW_TRACKING_URI") from None
    finally:
        engine.dispose()


def _check_server(uri: str) -> None:
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=CONNECT_TIMEOUT_S).close()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise StoreError(f"the tracking server {uri} cannot be reached ({reason}): start it (make server) "
                         "or fix MLFLOW_TRACKING_URI") from None
