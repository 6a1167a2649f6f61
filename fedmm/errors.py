"""The errors a user can cause and fix: the CLI prints these as one line, without a traceback.

Exit codes of the ``fedmm`` command: 0 success (for ``run`` and ``promote``: promoted),
1 a promotion gate failed, 2 a user error (config, data, registry request), 3 an internal
error, 128 + the signal when stopped by one (130 Ctrl-C, 143 SIGTERM). Tracebacks go to a
log file under ``$FEDMM_HOME/logs`` whose path is printed.
"""

import os
import signal
import tempfile
import time
import traceback
from pathlib import Path

from fedmm.runtime import state_dir

EXIT_OK, EXIT_GATE_FAILED, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 0, 1, 2, 3


class UserError(Exception):
    """Base of every error that names a problem in the user's input (config, data, registry request, deployment)."""


class PastRunError(UserError, ValueError):
    """The training run to analyse (audit, imputation) does not exist or has not finished."""


class StateDirError(UserError, OSError):
    """``FEDMM_HOME`` is not a folder fedmm can write."""


class Interrupted(KeyboardInterrupt):
    """The command was stopped by a signal (SIGINT from Ctrl-C, or SIGTERM); it exits with 128 + the signal."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, frame) -> None:
    """A signal handler: stop the command as Ctrl-C does, naming the signal."""
    raise Interrupted(signum)


def log_file(kind: str) -> Path:
    """A new log file path under the state folder (``logs/<kind>-<UTC time>-<pid>.log``), else the temp folder's."""
    name = f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
    for folder in (state_dir() / "logs", Path(tempfile.gettempdir()) / "fedmm-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder / name
        except OSError:
            continue
    return Path(os.devnull)


def details_path(error: BaseException) -> str:
    """Where the error's traceback is: the note a pipeline run added, else a new log file."""
    for note in getattr(error, "__notes__", []):
        if note.startswith("details: "):
            return note[len("details: "):]
    path = log_file("error")
    try:
        path.write_text("".join(traceback.format_exception(error)))
    except OSError as failed:
        return f"none (no log could be written: {failed.strerror})"
    return str(path)
