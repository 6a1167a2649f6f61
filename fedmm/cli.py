"""The ``fedmm`` command.

Exit codes: 0 success (``run``/``promote``/``rollback``: the version is champion), 1 a
promotion gate failed, 2 a user error (bad config, data or registry request), 3 an
internal error, 130 / 143 stopped by Ctrl-C / SIGTERM. Errors are one line plus the path
of a log file with the traceback.
``fedmm --help`` and ``fedmm <command> --help`` touch no state. Commands import what they run
(torch, ZenML, MLflow) only after their config has validated, so help and bad input answer at once.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from fedmm import graph, runtime
from fedmm.cli_deploy import register as register_deploy_commands
from fedmm.errors import (
    EXIT_GATE_FAILED,
    EXIT_INTERNAL_ERROR,
    EXIT_USER_ERROR,
    StateDirError,
    UserError,
    details_path,
    log_file,
    raise_interrupted,
)

CONFIG_OPTION = click.option(
    "--config", "-c", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="YAML config file (defaults apply when omitted).",
)
SET_OPTION = click.option(
    "--set", "-s", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config value (repeatable).",
)


def _load(config_path: Path | None, overrides: tuple[str, ...]):
    from fedmm.config import load_config

    return load_config(config_path, list(overrides))


@contextmanager
def orchestrator_logs_to(path: Path) -> Iterator[None]:
    """Send ZenML's log records to ``path`` (created only if something is logged), not to the terminal.

    ZenML logs a failed step as "Failed to run step" plus a long traceback before fedmm's own
    error reaches the caller; its records stop at the ``zenml`` logger (which does not
    propagate to the console handlers ZenML puts on the root logger when it is imported).
    An error is re-raised with the file's path as a note, so the CLI prints one line and
    where the details are. Nothing here imports ZenML.
    """
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    zenml_logger = logging.getLogger("zenml")
    propagated = zenml_logger.propagate
    zenml_logger.addHandler(handler)
    zenml_logger.propagate = False
    try:
        yield
    except Exception as error:
        with open(path, "a") as log:
            log.write("".join(traceback.format_exception(error)))
        error.add_note(f"details: {path}")
        raise
    finally:
        zenml_logger.propagate = propagated
        zenml_logger.removeHandler(handler)
        handler.close()


class StatefulCommand(click.Command):
    """A command that sets up the state folder when it runs (after ``--help`` was handled).

    ZenML's log records (a failed step's traceback) go to a log file, not the terminal.
    SIGTERM stops it as Ctrl-C does; either way its own MLflow runs are marked FAILED.
    """

    def invoke(self, ctx: click.Context):
        runtime.configure()
        previous = _handle_signals({signal.SIGTERM: raise_interrupted})
        try:
            with orchestrator_logs_to(log_file(ctx.info_name or "fedmm")):
                return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as error:
            if isinstance(error, KeyboardInterrupt):  # a second Ctrl-C must not cut the clean-up short
                previous = {**_handle_signals({signal.SIGINT: signal.SIG_IGN}), **previous}
            _fail_own_runs(error)
            raise
        finally:
            _handle_signals(previous)


def _handle_signals(handlers: dict) -> dict:
    """Install signal handlers (in the main thread only: elsewhere Python refuses); returns the previous ones."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig, handler in handlers.items() if handler is not None}


def _fail_own_runs(error: BaseException) -> None:
    """A failed command leaves no MLflow run of its own RUNNING (only if it got as far as tracking).

    Best effort: when the store itself is what failed, the sweep of the next command does it;
    a failure here must not replace the error the user is told about.
    """
    if "fedmm.tracking.runs" in sys.modules:
        from fedmm.tracking.runs import fail_own_runs

        try:
            fail_own_runs(_one_line(error))
        except Exception:  # noqa: BLE001 (the original error is what the user sees)
            logging.getLogger(__name__).debug("could not mark this command's MLflow runs FAILED", exc_info=True)


class FriendlyGroup(click.Group):
    """Turns errors into one clear line (exit 2 for the user's errors, 3 for internal ones).

    The traceback goes to a log file whose path is printed on the next line.
    """

    command_class = StatefulCommand

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as error:  # a bad option or argument: one line too, exit 2
            hint = f" (see {error.ctx.command_path} --help)" if error.ctx is not None else ""
            click.secho(f"error: {error.format_message()}{hint}", fg="red", err=True)
            sys.exit(EXIT_USER_ERROR)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM (errors.Interrupted)
            click.secho(f"error: {_one_line(error)}; its MLflow run, if any, is marked FAILED and the next "
                        "command cleans up anything half-registered", fg="red", err=True)
            sys.exit(128 + getattr(error, "signum", signal.SIGINT))
        except StateDirError as error:  # nowhere to write a log: the line is all there is
            click.secho(f"error: {_one_line(error)}", fg="red", err=True)
            sys.exit(EXIT_USER_ERROR)
        except UserError as error:
            click.secho(f"error: {_one_line(error)}", fg="red", err=True)
            click.echo(f"details: {details_path(error)}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except Exception as error:
            click.secho(f"internal error: {type(error).__name__}: {_one_line(error)}", fg="red", err=True)
            click.echo(f"details: {details_path(error)}", err=True)
            sys.exit(EXIT_INTERNAL_ERROR)


def _one_line(error: BaseException) -> str:
    """The error's message without the notes Python would print after it."""
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted by {signal.Signals(getattr(error, 'signum', signal.SIGINT)).name}"
    return str(error) or type(error).__name__


@click.group(cls=FriendlyGroup)
@click.version_option(package_name="fedmm")
def main() -> None:
    """Multimodal federated learning with missing modalities, as reproducible pipelines."""


@main.command()
@CONFIG_OPTION
@SET_OPTION
def run(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Run the config's graph on the active ZenML stack (local by default).

    The graph follows from the config: the training graph, the deployed one when the coordinator's
    own data is set, the FedMKGC graph for a ``task: fedmkgc`` file (validate triples, federate,
    train, evaluate, register and promote on filtered MRR).
    """
    config = graph.load_run_config(config_path, overrides)  # before the pipeline's imports: a bad config fails fast
    from fedmm_pipelines.pipelines.runner import run_pipeline

    summary = run_pipeline(config, echo=click.echo)
    warning = graph.resolve(graph.for_config(config).conclude)(summary, click.echo)
    if warning is not None:
        click.secho(warning, fg="yellow", err=True)
        sys.exit(EXIT_GATE_FAILED)


def _graph_with(config, stage: str) -> graph.Graph:
    """The config's graph, which must have ``stage`` (else one line: the command makes no sense for its task)."""
    from fedmm.config import ConfigError

    chosen = graph.for_config(config)
    if stage not in chosen.names:
        raise ConfigError(f"the {chosen.name} graph has no {stage} stage: this command does not apply to its configs")
    return chosen


@main.command("config")
@CONFIG_OPTION
@SET_OPTION
def show_config(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Validate a config and print it with every default filled in."""
    import yaml

    config = graph.load_run_config(config_path, overrides)
    click.echo(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    if hasattr(config, "hash"):
        click.echo(f"# config hash: {config.hash()}")


FLOOR_OPTION = click.option(
    "--min-macro-f1", type=click.FloatRange(0, 1), default=None,
    help="Floor in [0, 1] (default: the config's registry.min_macro_f1).",
)
AUDIT_OPTION = click.option(
    "--require-clean-audit/--no-require-clean-audit", default=None,
    help="Gate on the contribution audit (default: the config's registry.require_clean_audit).",
)


def _policy(model_name: str, version: str | None, config_path: Path | None, **overrides):
    """The gate settings recorded with the version, unless ``-c`` or an option overrides them (the output says which)."""
    from fedmm.tracking.registry import GatePolicy, recorded_policy

    recorded = recorded_policy(model_name, version) if version is not None and config_path is None else None
    if recorded is not None:
        base, source = recorded, f"recorded with {model_name} v{version}"
    else:
        base = GatePolicy.from_config(_load(config_path, ()).registry)
        source = f"from {config_path} (command line)" if config_path else "the default config's (none recorded)"
    changed = {key: value for key, value in overrides.items() if value is not None}
    policy = base.with_overrides(**changed)
    overridden = f"; overridden on the command line: {', '.join(f'{k}={v}' for k, v in changed.items())}" if changed else ""
    click.echo(f"gate settings {source}{overridden}: {policy.describe()}")
    return policy


def _sweep() -> None:
    """Report what crashed runs left behind and clean it up (stale runs, half-registered versions)."""
    from fedmm.tracking.registry import sweep

    for line in sweep():
        click.echo(f"swept: {line}")


def _report_decision(decision, success: str) -> None:
    """Print the gates and aliases of a decision; exit 1 when it was refused."""
    from fedmm_pipelines.pipelines.model_control_plane import mirror_aliases
    from fedmm_pipelines.pipelines.runner import ensure_store

    ensure_store()
    mirror_aliases(decision.model_name)
    for gate in decision.gates:
        click.echo(f"{'pass' if gate.passed else 'FAIL'}  {gate.name}: {gate.detail}")
    click.echo(f"aliases: {decision.aliases}")
    already = decision.champion_before == decision.version and all(gate.passed for gate in decision.gates)
    if already:
        success = f"{decision.model_name} v{decision.version} is already champion"
    elif not decision.promoted:
        click.secho(f"{decision.model_name} v{decision.version} was not made champion (a gate failed)",
                    fg="yellow", err=True)
        sys.exit(EXIT_GATE_FAILED)
    click.echo(success)


@main.command()
@click.option("--model", "model_name", required=True, help="Registered model name.")
@click.option("--version", "version", required=True, help="Model version to promote.")
@FLOOR_OPTION
@click.option("--margin", type=click.FloatRange(0, 1), default=None,
              help="Margin in [0, 1] the challenger must beat the champion by (default: the config's).")
@AUDIT_OPTION
@CONFIG_OPTION
def promote(model_name: str, version: str, min_macro_f1: float | None, margin: float | None,
            require_clean_audit: bool | None, config_path: Path | None) -> None:
    """Promote a version to champion if every gate passes (exit 1 when one fails)."""
    from fedmm.tracking.registry import promote as promote_version

    _sweep()
    policy = _policy(model_name, version, config_path, min_macro_f1=min_macro_f1, margin=margin,
                     require_clean_audit=require_clean_audit)
    decision = promote_version(model_name, version, policy)
    _report_decision(decision, f"{model_name} v{decision.version} is now champion")


@main.command()
@click.option("--model", "model_name", required=True, help="Registered model name.")
@FLOOR_OPTION
@AUDIT_OPTION
@CONFIG_OPTION
def rollback(model_name: str, min_macro_f1: float | None, require_clean_audit: bool | None,
             config_path: Path | None) -> None:
    """Make previous-champion the champion again, if it passes the gates (exit 1 when one fails)."""
    from fedmm.tracking.registry import rollback as rollback_model
    from fedmm.tracking.registry import rollback_target

    _sweep()
    policy = _policy(model_name, rollback_target(model_name), config_path, min_macro_f1=min_macro_f1,
                     require_clean_audit=require_clean_audit)
    decision = rollback_model(model_name, policy)
    _report_decision(decision, f"{model_name} v{decision.version} is champion again")


@main.command("stage")
@click.argument("name", type=click.Choice(graph.STAGE_NAMES))
@CONFIG_OPTION
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts"),
              show_default=True, help="Folder of stage inputs and outputs.")
def stage_command(name: str, config_path: Path | None, workdir: Path) -> None:
    """Run one pipeline stage over folders (the DVC stages call this)."""
    from fedmm.stages import run_in

    config = graph.load_run_config(config_path, ())
    chosen = graph.for_config(config)
    if name not in chosen.names:
        raise click.BadParameter(f"graph {chosen.name!r} has no stage {name!r}; its stages are {list(chosen.names)}")
    run_in(chosen, name, config, workdir)


@main.command("dvc")
@CONFIG_OPTION
@SET_OPTION
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where to write dvc.yaml and params.yaml (`.` regenerates the repository's own).")
def dvc_command(config_path: Path | None, overrides: tuple[str, ...], directory: Path) -> None:
    """Write a DVC pipeline for a config: dvc.yaml from the stage graph and the full config as params.yaml.

    For your own data, write it to its own folder: the tracked params.yaml stays as it is. Its
    stages call this environment's fedmm by its absolute path; the output says how to run it
    (from the DVC repository holding the folder, or after `dvc init --no-scm` in it).
    """
    from fedmm.stages import dvc_instructions, write_dvc_project

    config = graph.load_run_config(config_path, overrides)
    paths = write_dvc_project(graph.for_config(config), config, directory)
    click.echo(f"wrote {paths['dvc']} and {paths['params']}; run: {dvc_instructions(paths['dvc'])}")


@main.command()
@click.option("--run", "training_run_id", required=True, help="ZenML pipeline run id of a finished training run.")
@CONFIG_OPTION
@SET_OPTION
def audit(training_run_id: str, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Audit a past training run's client contributions (audit settings from the config)."""
    config = graph.load_run_config(config_path, overrides)
    chosen = _graph_with(config, "audit")
    from fedmm.report import print_audit
    from fedmm_pipelines.pipelines.graph import output, run_analysis

    run = run_analysis(chosen, "audit", config, training_run_id)
    print_audit(output(run, chosen, chosen.stage("audit").output))
    click.echo(f"audit pipeline run: {run.id}")


@main.command()
@click.option("--run", "training_run_id", required=True, help="ZenML pipeline run id of a finished training run.")
@CONFIG_OPTION
@SET_OPTION
def impute(training_run_id: str, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Evaluate imputers of missing modalities on a past training run's model (settings: impute.*)."""
    config = graph.load_run_config(config_path, overrides)
    chosen = _graph_with(config, "evaluate-imputation")
    from fedmm_pipelines.pipelines.graph import output, run_analysis

    run = run_analysis(chosen, "evaluate-imputation", config, training_run_id)
    report = output(run, chosen, chosen.stage("evaluate-imputation").output)
    click.echo(report.markdown())
    click.echo(f"{report.meta['samples']} test samples; patterns {', '.join(report.meta['patterns'])}; "
               f"rates {', '.join(f'{r:g}' for r in report.meta['rates'])} (impute.rates)")
    click.echo(f"imputation pipeline run: {run.id}")


@main.command()
@click.option("--config", "-c", "spec_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Experiment file (configs/experiments/*.yaml).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results folder (default: reports/experiments/<name>).")
@click.option("--dry-run", is_flag=True, help="List the cells and their `fedmm run` commands; run nothing.")
def experiment(spec_path: Path, output: Path | None, dry_run: bool) -> None:
    """Run a matrix of configs resumably: CSV, Markdown table and plots, one MLflow parent run.

    The file's ``task:`` names the graph whose cells it runs (none: the training graph; ``fedmkgc``, ``fedmmkt``).
    """
    matrix = graph.experiment_matrix(spec_path)
    if not dry_run:
        from fedmm.experiments.runner import run_matrix

        outcome = run_matrix(matrix, output or Path("reports") / "experiments" / matrix.name)
    for line in matrix.listing() if dry_run else matrix.conclusion(outcome):
        click.echo(line)


register_deploy_commands(main)


def entry() -> None:
    """The ``fedmm`` command (the console script; tests call :func:`main` in process).

    It leaves without the interpreter's teardown: once the exit handlers registered after this one have run
    (MLflow's, multiprocessing's, temporary folders') and the streams and logs are flushed, ``os._exit``
    skips freeing torch's, ZenML's and MLflow's objects one by one, which took 3-4 s of a 50 s ``make run``.
    """
    exit_code = 1

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(exit_code)

    atexit.register(leave)
    try:
        main()
    except SystemExit as done:
        exit_code = done.code if isinstance(done.code, int) else int(done.code is not None)
        raise
    exit_code = 0


if __name__ == "__main__":
    entry()
