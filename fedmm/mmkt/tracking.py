"""FedMMKT's MLflow side: a resumable parent run, a child run per cell, and both models registered and gated.

A ``fedmmkt`` cell registers the aggregated client task model (``registry.model_name`` of
the federation config) through the pipeline's own registration, frozen test set and
promotion gates (validation, macro-F1 floor, test size, beats the champion), and the
co-enhanced generator (``generator_model_name``) as its own pyfunc on a second run. Each
version is tagged with the other's name and version, the data, test set and partition
hashes, the configs' hashes and the git commit. The generator becomes champion only when
the task model trained with it was promoted and its fidelity did not fall.

A ``fedmm run`` of a ``task: fedmmkt`` file (the FedMMKT graph's register stage) logs the same
run and registers the same way, in the ``fedmm-mmkt`` experiment (:func:`record_and_register`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow import MlflowClient

from fedmm.artifacts import read_json, write_json
from fedmm.data.validation import ValidationReport
from fedmm.fl.result import TrainResult
from fedmm.mmkt.config import TASK, MMKTConfig, MMKTRunConfig
from fedmm.mmkt.federation import Federation, federation_config
from fedmm.mmkt.generator import TextToImage, prompt_embeddings
from fedmm.mmkt.pyfunc import save_generator
from fedmm.mmkt.strategy import generator_of, losses_of
from fedmm.runtime import tracking_uri
from fedmm.tracking import registry, runs
from fedmm.tracking import tags as T

EXPERIMENT = "fedmm-mmkt-experiments"
RUN_EXPERIMENT = "fedmm-mmkt"
STATE_FILE = "state.json"
KEYS = ("run_id", "method", "seed")


class Tracker:
    """The experiment's parent run (reused when the folder is resumed) and what each cell logs and registers."""

    def __init__(self, spec, directory: Path) -> None:
        self.spec, self.client = spec, runs.client()
        self.experiment = runs.experiment_id(EXPERIMENT)
        state = directory / STATE_FILE
        if state.is_file():
            self.parent = read_json(state)["parent_run_id"]
        else:
            self.parent = self.client.create_run(
                self.experiment, run_name=spec.name,
                tags={T.EXPERIMENT: spec.name, T.TASK: spec.task, T.GIT_COMMIT: runs.git_commit()},
            ).info.run_id
            write_json(state, {"parent_run_id": self.parent, "experiment": spec.name})

    def cell(self, config: MMKTConfig, row: dict, trained: TrainResult, generator: TextToImage | None,
             federation: Federation, reports: list, grid: Path | None) -> None:
        """A child run with the cell's config, validation, per-round history and metrics; for ``fedmmkt`` the registrations."""
        run_id = child_run(self.client, self.experiment, self.parent, f"{config.method}/seed={config.seed}",
                           cell_params(config))
        log_cell(self.client, run_id, reports, trained, {k: v for k, v in row.items() if k not in KEYS})
        if grid is not None:
            self.client.log_artifact(run_id, str(grid), "plots")
        if generator is None:
            self.client.set_terminated(run_id, "FINISHED")
            return
        where = Registration(config, self.spec.generator_model_name, self.spec.name, self.experiment, self.parent)
        decisions = register_pair(where, row, trained, generator, federation,
                                  all(r.success for r in reports), run_id)
        for name, decision in decisions.items():
            runs.log_dict(self.parent, decision.to_dict(), f"registry/seed{config.seed}_{name}_promotion.json")

    def finish(self, outputs: list[Path]) -> None:
        for output in outputs:
            self.client.log_artifact(self.parent, str(output), "plots" if output.suffix == ".png" else None)
        self.client.set_terminated(self.parent, "FINISHED")


def cell_params(config: MMKTConfig) -> dict:
    return {**config.model_dump(mode="json"), "federation": federation_config(config).model_dump(mode="json")}


def child_run(client: MlflowClient, experiment: str, parent: str | None, name: str, params: dict) -> str:
    """A run (under ``parent`` when given) with ``params`` (flattened) logged."""
    tags = {"mlflow.parentRunId": parent} if parent else {}
    run_id = client.create_run(experiment, run_name=name, tags={**tags, **runs.owner_tags()}).info.run_id
    for key, value in runs.flatten(params).items():
        client.log_param(run_id, key, value[:6000])
    return run_id


def log_cell(client: MlflowClient, run_id: str, reports: list[ValidationReport], trained: TrainResult,
             metrics: dict[str, float]) -> None:
    """The validation reports, the per-round history, the generator's fine-tuning losses and the final metrics."""
    for report in reports:
        runs.log_validation(run_id, report)
    for record in trained.history:
        for key, value in record.to_dict().items():
            if key not in ("round", "clients", "dropped"):
                client.log_metric(run_id, key, float(value), step=record.round)
    for step, losses in enumerate(losses_of(trained.server_state), start=1):
        for key, value in losses.items():
            client.log_metric(run_id, key, float(value), step=step)
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))


@dataclass(frozen=True)
class Registration:
    """Where a FedMMKT run registers: its config, the generator's model name, the experiment (or graph) it belongs
    to, and the MLflow experiment and parent run the generator's run is filed under."""

    config: MMKTConfig
    generator_name: str
    label: str
    experiment_id: str
    parent_run: str | None


def register_pair(where: Registration, row: dict, trained: TrainResult, generator: TextToImage | None,
                  federation: Federation, validated: bool, run_id: str,
                  extra_tags: dict[str, str] | None = None) -> dict[str, registry.PromotionDecision]:
    """Register the task model (on ``run_id``) and the generator, if any (on a run of its own), cross-tagged with
    their lineage; promote the task model by the registry's gates, the generator only with it and if its fidelity
    held.

    ``row`` holds the metrics (``test_macro_f1``; ``server_before_*``, ``server_after_*`` with a generator).
    Returns the decisions by ``client`` and ``generator``.
    """
    config, client = where.config, runs.client()
    fed_config = federation_config(config)
    prepared = federation.prepared
    test_set = prepared.dataset.subset(prepared.indices("test"))
    lineage = {
        T.DATA_SHA256: prepared.data_sha256,
        T.TEST_SHA256: prepared.manifest["test_sha256"],
        T.PARTITION_SHA256: federation.federated.content_hash,
        T.CONFIG_HASH: fed_config.hash(),
        T.MMKT_RUN_ID: config.run_id(),
        T.GENERATOR_PRETRAIN_KEY: config.generator.key(),
        T.GIT_COMMIT: runs.git_commit(),
        T.STRATEGY: config.method,
        T.EXPERIMENT: where.label,
        registry.TAG_VALIDATION: "true" if validated else "false",
    }
    client_name, generator_name = fed_config.registry.model_name, where.generator_name
    generator_version = None
    if generator is not None:
        generator_run = child_run(client, where.experiment_id, where.parent_run or run_id,
                                  f"{config.method}/seed={config.seed}/generator", config.generator.model_dump(mode="json"))
        with tempfile.TemporaryDirectory() as tmp:
            saved, digest = save_generator(generator, prompt_embeddings()[0].numpy(), Path(tmp))
            generator_version = registry.register_saved(generator_run, generator_name, saved, digest, {
                **lineage, T.MLFLOW_RUN_ID: generator_run, T.PRETRAINED_ON: "sklearn load_digits",
                **{T.MMKT_SERVER.key(k): f"{v:.6f}" for k, v in row.items() if k.startswith("server_")},
            })
    model = replace(trained, server_state={})  # the task model predicts alone; the generator is its own version
    client_version = registry.register_model(run_id, client_name, model, test_set, {
        **lineage, **(extra_tags or {}), T.MLFLOW_RUN_ID: run_id, T.TEST_MACRO_F1: f"{row['test_macro_f1']:.6f}",
        **({T.GENERATOR_MODEL: f"{generator_name} v{generator_version}"} if generator_version else {}),
    })
    decision = registry.promote(client_name, client_version, registry.GatePolicy.from_config(fed_config.registry),
                                test_set)
    if generator_version is None:
        return {"client": decision}
    client.set_model_version_tag(generator_name, generator_version, T.CLIENT_MODEL, f"{client_name} v{client_version}")
    before, after = row["server_before_fidelity"], row["server_after_fidelity"]
    gates = [
        registry.Gate("validation", validated, f"{registry.TAG_VALIDATION}={lineage[registry.TAG_VALIDATION]}"),
        registry.Gate("client_model_promoted", decision.promoted,
                      f"{client_name} v{client_version}: " + "; ".join(
                          f"{g.name}={'pass' if g.passed else 'FAIL'}" for g in decision.gates)),
        registry.Gate("fidelity_not_lower", after >= before, f"fidelity {after:.4f} after vs {before:.4f} before"),
    ]
    return {"client": decision, "generator": registry.promote_on(generator_name, generator_version, gates)}


def record_and_register(config: MMKTRunConfig, reports: list[ValidationReport], federation: Federation,
                        trained: TrainResult, evaluation: dict, extra_tags: dict[str, str]) -> dict:
    """One ``fedmm run``: an MLflow run with the config, validation, history and metrics; both models registered
    and gated (:func:`register_pair`). Returns the run summary."""
    cell, client = config.cell(), runs.client()
    experiment = runs.experiment_id(RUN_EXPERIMENT)
    run_id = child_run(client, experiment, None, f"{cell.method}/seed={cell.seed}",
                       {**cell_params(cell), "registry": config.registry.model_dump(mode="json")})
    client.set_tag(run_id, T.TASK, TASK)
    log_cell(client, run_id, reports, trained, evaluation)
    generator = generator_of(trained.server_state, cell.strategy_section()) if cell.method == "fedmmkt" else None
    where = Registration(cell, config.registry.generator_model_name, "fedmm run", experiment, None)
    decisions = register_pair(where, evaluation, trained, generator, federation, all(r.success for r in reports),
                              run_id, extra_tags)
    for name, decision in decisions.items():
        runs.log_dict(run_id, decision.to_dict(), f"registry/{name}_promotion.json")
    models = [{"model_name": d.model_name, "model_version": d.version, "promoted": d.promoted,
               "aliases": registry.version_aliases(d.model_name, d.version),
               "gates": [{"name": g.name, "passed": g.passed, "detail": g.detail} for g in d.gates]}
              for d in decisions.values()]
    return {"task": TASK, "method": cell.method, "seed": cell.seed, **evaluation, **models[0], "models": models,
            "data_sha256": federation.prepared.data_sha256, "tracking_uri": tracking_uri(), "mlflow_run_id": run_id}
