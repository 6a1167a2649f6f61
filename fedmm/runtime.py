"""Process-wide runtime setup: where state lives, telemetry off, quiet logs, device choice.

Call :func:`configure` before importing zenml, mlflow, dvc or great_expectations: they
read these environment variables at import time.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

STATE_DIR_ENV = "FEDMM_HOME"

_QUIET_LOGGERS = (
    "alembic", "mlflow", "zenml", "great_expectations", "dvc", "kfp", "urllib3",
    "git", "matplotlib", "PIL", "numexpr", "httpx", "sqlalchemy",
)


class _IgnoredWarnings(logging.Filter):
    """Drops the captured warnings fedmm cannot act on; every other warning reaches the user.

    MLflow 3 advises type hints on every PythonModel's ``predict`` (to infer a signature); fedmm's
    pyfunc takes a dict of arrays, which MLflow's hints cannot describe, and logs an explicit
    signature instead. MLflow raises the advice under its own ``simplefilter("once")``, so no
    warnings filter reaches it: it is dropped here, by its source file and message.
    """

    IGNORED = (("mlflow/pyfunc/utils/data_validation.py", "Add type hints to the `predict` method"),)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(source in text and message in text for source, message in self.IGNORED)


def state_dir() -> Path:
    """The folder holding all of fedmm's state: `$FEDMM_HOME`, else `./.fedmm`."""
    return Path(os.environ.get(STATE_DIR_ENV) or Path.cwd() / ".fedmm").resolve()


def tracking_uri() -> str:
    """The MLflow tracking/registry URI: a SQLite file inside the state folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow.db'}"


def usable_state_dir() -> Path:
    """The state folder, created if needed; :class:`fedmm.errors.StateDirError` when it is not a folder fedmm can write."""
    from fedmm.errors import StateDirError

    root = state_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=root).close()
    except FileExistsError:
        raise StateDirError(f"{STATE_DIR_ENV}={root} is not a folder (a file is in the way): "
                            f"set {STATE_DIR_ENV} to a folder fedmm may write") from None
    except OSError as error:
        raise StateDirError(f"{STATE_DIR_ENV}={root} cannot be written ({error.strerror}): "
                            f"set {STATE_DIR_ENV} to a folder fedmm may write") from None
    return root


def configure() -> Path:
    """Point every library's state into the state folder, turn telemetry off, silence logs."""
    root = usable_state_dir()
    os.environ[STATE_DIR_ENV] = str(root)
    defaults = {
        "ZENML_CONFIG_PATH": str(root / "zenml"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_LOGGING_VERBOSITY": "ERROR",
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
        "ZENML_LOGGING_COLORS_DISABLED": "true",
        "ZENML_DEBUG": "false",
        "AUTO_OPEN_DASHBOARD": "false",
        "MLFLOW_TRACKING_URI": tracking_uri(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
        "MLFLOW_LOGGING_LEVEL": "ERROR",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MPLCONFIGDIR": str(root / "matplotlib"),
        "MPLBACKEND": "Agg",
        "GIT_PYTHON_REFRESH": "quiet",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    quiet_libraries()
    return root


def quiet_libraries() -> None:
    """Progress bars and results only: libraries log errors, no info or debug. Python warnings go to the
    ``py.warnings`` logger, which writes them to stderr, except those :class:`_IgnoredWarnings` names."""
    logging.captureWarnings(True)
    captured = logging.getLogger("py.warnings")
    if not captured.handlers:  # logging would give it a NullHandler, dropping every warning
        captured.addHandler(logging.StreamHandler())
        captured.addFilter(_IgnoredWarnings())
        captured.propagate = False
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def resolve_device(requested: str) -> str:
    """`auto` means CUDA when available, else CPU; an explicit request is checked."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={requested!r} but no CUDA device is available")
    return requested
