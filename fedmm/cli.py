"""The ``fedmm`` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fedmm import runtime

runtime.configure()

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


class FriendlyGroup(click.Group):
    """Turns fedmm's own errors into one clear line and exit code 2, without a traceback."""

    def invoke(self, ctx: click.Context):
        from fedmm.errors import user_errors

        try:
            return super().invoke(ctx)
        except user_errors() as error:
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=FriendlyGroup)
@click.version_option(package_name="fedmm")
def main() -> None:
    """Multimodal federated learning with missing modalities, as reproducible pipelines."""


@main.command()
@CONFIG_OPTION
@SET_OPTION
def run(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Run the training pipeline on the active ZenML stack (local by default)."""
    from pipelines.runner import run_pipeline
    from fedmm.report import print_summary, write_summary

    config = _load(config_path, overrides)
    summary = run_pipeline(config)
    path = write_summary(summary)
    print_summary(summary)
    click.echo(f"summary: {path}")


@main.command("config")
@CONFIG_OPTION
@SET_OPTION
def show_config(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Validate a config and print it with every default filled in."""
    import yaml

    config = _load(config_path, overrides)
    click.echo(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    click.echo(f"# config hash: {config.hash()}")


@main.command()
@click.option("--model", "model_name", required=True, help="Registered model name.")
@click.option("--version", "version", required=True, help="Model version to promote.")
@click.option("--min-macro-f1", type=float, default=None, help="Floor (default: the config's registry.min_macro_f1).")
@click.option("--margin", type=float, default=None, help="Margin over the champion (default: the config's).")
@click.option("--require-clean-audit/--no-require-clean-audit", default=None,
              help="Gate on the contribution audit (default: the config's registry.require_clean_audit).")
@CONFIG_OPTION
def promote(model_name: str, version: str, min_macro_f1: float | None, margin: float | None,
            require_clean_audit: bool | None, config_path: Path | None) -> None:
    """Promote a version to champion if every gate passes (exit 1 when it does not)."""
    from fedmm.tracking.registry import promote as promote_version
    from pipelines.model_control_plane import mirror_aliases

    config = _load(config_path, ())
    floor = config.registry.min_macro_f1 if min_macro_f1 is None else min_macro_f1
    margin = config.registry.champion_margin if margin is None else margin
    if require_clean_audit is None:
        require_clean_audit = config.registry.require_clean_audit
    decision = promote_version(model_name, version, floor, margin, require_clean_audit=require_clean_audit)
    mirror_aliases(model_name)
    for gate in decision.gates:
        click.echo(f"{'pass' if gate.passed else 'FAIL'}  {gate.name}: {gate.detail}")
    click.echo(f"aliases: {decision.aliases}")
    if not decision.promoted:
        click.secho(f"{model_name} v{version} was not promoted", fg="yellow", err=True)
        sys.exit(1)
    click.echo(f"{model_name} v{version} is now champion")


@main.command()
@click.option("--model", "model_name", required=True, help="Registered model name.")
def rollback(model_name: str) -> None:
    """Make previous-champion the champion again."""
    from fedmm.tracking.registry import rollback as rollback_model
    from pipelines.model_control_plane import mirror_aliases

    moved = rollback_model(model_name)
    mirror_aliases(model_name)
    click.echo(f"aliases: {moved}")


@main.command("stage")
@click.argument("name", type=click.Choice(["prepare", "validate-data", "partition", "validate-partitions",
                                           "train", "evaluate", "register"]))
@CONFIG_OPTION
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts"),
              show_default=True, help="Folder of stage inputs and outputs.")
def stage_command(name: str, config_path: Path | None, workdir: Path) -> None:
    """Run one pipeline stage over folders (the DVC stages call this)."""
    from fedmm.stages import STAGES

    STAGES[name](_load(config_path, ()), workdir)


@main.command()
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="This site's own data file (the bring-your-own-data .npz layout).")
@click.option("--partition-id", required=True, type=click.IntRange(min=0), help="This site's client id in the run.")
@click.option("--superlink", required=True, help="HOST:PORT of the SuperLink's Fleet API.")
@click.option("--root-certificates", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The SuperLink's CA certificate (PEM): TLS.")
@click.option("--insecure", is_flag=True, help="No TLS (refused unless the SuperLink is on loopback).")
@click.option("--auth-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="This SuperNode's private key (OpenSSH EC), whose public key the SuperLink has registered.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the site keeps per-run state (default: .fedmm-site beside the data file).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads.")
def site(data_path: Path, partition_id: int, superlink: str, root_certificates: Path | None, insecure: bool,
         auth_key: Path | None, state_dir: Path | None, threads: int) -> None:
    """Join a federation as one site: a Flower SuperNode and its ClientApp, with this site's data only.

    Run it in the site environment (`make install-site`, or requirements-site.lock); the data
    never leaves this machine: the server receives model updates and the validation report.
    """
    from fedmm.fl.deploy import Runtime, SiteSpec, run_site
    from fedmm.runtime import state_dir as home

    if insecure:
        click.secho(f"warning: insecure (no TLS) connection to {superlink}: loopback only", fg="yellow", err=True)
    spec = SiteSpec(partition_id, data_path.resolve(), (state_dir or data_path.parent / ".fedmm-site").resolve(),
                    auth_key.resolve() if auth_key else None)
    runtime = Runtime(Path(sys.prefix), home() / "flower", threads)
    sys.exit(run_site(runtime, spec, superlink, root_certificates, insecure))


@main.command()
@click.option("--run", "training_run_id", required=True, help="ZenML pipeline run id of a finished training run.")
@CONFIG_OPTION
@SET_OPTION
def audit(training_run_id: str, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Audit a past training run's client contributions (audit settings from the config)."""
    from fedmm.report import print_audit
    from pipelines.audit import run_audit

    run = run_audit(_load(config_path, overrides), training_run_id)
    report = run.steps["audit_contributions"].outputs["contribution_audit"][0].load()
    print_audit(report)
    click.echo(f"audit pipeline run: {run.id}")


@main.command()
@click.option("--run", "training_run_id", required=True, help="ZenML pipeline run id of a finished training run.")
@CONFIG_OPTION
@SET_OPTION
def impute(training_run_id: str, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Evaluate imputers of missing modalities on a past training run's model (settings: impute.*)."""
    from pipelines.imputation import run_imputation

    run = run_imputation(_load(config_path, overrides), training_run_id)
    report = run.steps["evaluate_imputation"].outputs["imputation_report"][0].load()
    click.echo(report.markdown(rate=0.5 if 0.5 in report.table["rate"].values else None))
    click.echo(f"imputation pipeline run: {run.id}")


@main.command()
@click.option("--config", "-c", "spec_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Experiment file (configs/experiments/*.yaml).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results folder (default: reports/experiments/<name>).")
@click.option("--dry-run", is_flag=True, help="List the cells and their `fedmm run` commands; run nothing.")
def experiment(spec_path: Path, output: Path | None, dry_run: bool) -> None:
    """Run a matrix of configs resumably: CSV, Markdown table and plots, one MLflow parent run."""
    from fedmm.experiments.matrix import expand, load_spec

    spec, base = load_spec(spec_path)
    cells = expand(spec, base)
    if dry_run:
        for cell in cells:
            click.echo(f"{cell.cell_id}  {cell.run_command()}")
        click.echo(f"{len(cells)} cells")
        return
    from fedmm.experiments.runner import run_experiment

    outcome = run_experiment(spec, cells, output or Path("reports") / "experiments" / spec.name)
    click.echo(outcome.outputs["table"].read_text())
    click.echo(f"ran {outcome.ran} cells, {outcome.skipped} already done; results: {outcome.outputs['cells'].parent}")
    click.echo(f"MLflow parent run: {outcome.parent_run_id}")


if __name__ == "__main__":
    main()
