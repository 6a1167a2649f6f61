"""Launch the training pipeline and fetch its summary artifact; keep ZenML's failure noise off the terminal.

ZenML logs a failed step as "Failed to run step" plus a long traceback before fedmm's own
error reaches the caller. Inside :func:`zenml_logs_to` (every ``fedmm`` command runs in
it) ZenML's log records go to a log file instead of the terminal; an error is re-raised
with the file's path as a note, so the CLI prints one line and where the details are.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedmm.config import Config
from fedmm.runtime import state_dir
from fedmm.tracking.lock import file_lock


class _NotZenML(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("zenml")


@contextmanager
def zenml_logs_to(path: Path) -> Iterator[None]:
    """Send ZenML's log records to ``path`` (created only if something is logged), not to the terminal."""
    root = logging.getLogger()
    console = [h for h in root.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    quiet = _NotZenML()
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    zenml_logger = logging.getLogger("zenml")
    for h in console:
        h.addFilter(quiet)
    zenml_logger.addHandler(handler)
    try:
        yield
    except Exception as error:
        with open(path, "a") as log:
            log.write("".join(traceback.format_exception(error)))
        error.add_note(f"details: {path}")
        raise
    finally:
        zenml_logger.removeHandler(handler)
        handler.close()
        for h in console:
            h.removeFilter(quiet)


def ensure_store() -> None:
    """Create and migrate the local ZenML store once, under a lock: concurrent first runs wait for it."""
    from zenml.client import Client

    with file_lock(state_dir() / "zenml.init.lock", what="ZenML store lock"):
        Client().zen_store


def run_pipeline(config: Config, echo=print) -> dict:
    """Check the config against the data, sweep what crashed runs left, run the ZenML pipeline.

    Preflight warnings and what was swept are passed to ``echo``. Returns the run summary.
    """
    from fedmm import workflow

    for warning in workflow.preflight(config):
        echo(f"warning: {warning}")
    from fedmm.tracking.registry import sweep
    from pipelines.training import run_training

    for line in sweep():
        echo(f"swept: {line}")
    ensure_store()
    run = run_training(config)
    summary = run.steps["register_and_promote"].outputs["run_summary"]
    artifact = summary[0] if isinstance(summary, list) else summary
    return {**artifact.load(), "zenml_pipeline_run": str(run.id)}
