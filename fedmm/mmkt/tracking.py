"""FedMMKT's MLflow side: a resumable parent run, a child run per cell, and both models registered and gated.

A ``fedmmkt`` cell registers the aggregated client task model (``registry.model_name`` of
the federation config) through the pipeline's own registration, frozen test set and
promotion gates (validation, macro-F1 floor, test size, beats the champion), and the
co-enhanced generator (``generator_model_name``) as its own pyfunc on a second run. Each
version is tagged with the other's name and version, the data, test set and partition
hashes, the configs' hashes and the git commit. The generator becomes champion only when
the task model trained with it was promoted and its fidelity did not fall.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fedmm.artifacts import read_json, write_json
from fedmm.fl.result import TrainResult
from fedmm.mmkt.config import MMKTConfig
from fedmm.mmkt.federation import Federation, federation_config
from fedmm.mmkt.generator import prompt_embeddings
from fedmm.mmkt.pyfunc import save_generator
from fedmm.mmkt.run import CellResult
from fedmm.tracking import registry, runs
from fedmm.tracking import tags as T

EXPERIMENT = "fedmm-mmkt-experiments"
STATE_FILE = "state.json"


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

    def _run(self, name: str, params: dict) -> str:
        run_id = self.client.create_run(self.experiment, run_name=name,
                                        tags={"mlflow.parentRunId": self.parent, **runs.owner_tags()}).info.run_id
        for key, value in runs.flatten(params).items():
            self.client.log_param(run_id, key, value[:6000])
        return run_id

    def cell(self, config: MMKTConfig, row: dict, result: CellResult, federation: Federation, reports: list,
             grid: Path | None) -> None:
        """A child run with the cell's config, validation, per-round history and metrics; for ``fedmmkt`` the registrations."""
        fed_config = federation_config(config)
        run_id = self._run(f"{config.method}/seed={config.seed}",
                           {**config.model_dump(mode="json"), "federation": fed_config.model_dump(mode="json")})
        for report in reports:
            runs.log_validation(run_id, report)
        for record in result.outcome.history:
            for key, value in record.to_dict().items():
                if key not in ("round", "clients", "dropped"):
                    self.client.log_metric(run_id, key, float(value), step=record.round)
        for step, losses in enumerate(result.outcome.generator_losses, start=1):
            for key, value in losses.items():
                self.client.log_metric(run_id, key, float(value), step=step)
        for key, value in row.items():
            if key not in ("run_id", "method", "seed"):
                self.client.log_metric(run_id, key, float(value))
        if grid is not None:
            self.client.log_artifact(run_id, str(grid), "plots")
        if result.generator is None:
            self.client.set_terminated(run_id, "FINISHED")
            return
        self._register(config, row, result, federation, all(r.success for r in reports), run_id)

    def _register(self, config: MMKTConfig, row: dict, result: CellResult, federation: Federation, validated: bool,
                  run_id: str) -> None:
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
            T.EXPERIMENT: self.spec.name,
            registry.TAG_VALIDATION: "true" if validated else "false",
        }
        client_name, generator_name = fed_config.registry.model_name, self.spec.generator_model_name
        generator_run = self._run(f"{config.method}/seed={config.seed}/generator", config.generator.model_dump(mode="json"))
        with tempfile.TemporaryDirectory() as tmp:
            saved, digest = save_generator(result.generator, prompt_embeddings()[0].numpy(), Path(tmp))
            generator_version = registry.register_saved(generator_run, generator_name, saved, digest, {
                **lineage, T.MLFLOW_RUN_ID: generator_run, T.PRETRAINED_ON: "sklearn load_digits",
                **{T.MMKT_SERVER.key(k): f"{v:.6f}" for k, v in row.items() if k.startswith("server_")},
            })
        model = TrainResult(federation.spec, result.outcome.state, result.outcome.history, "fedavg", config.run_id(),
                            Path(tempfile.gettempdir()))
        client_version = registry.register_model(run_id, client_name, model, test_set, {
            **lineage, T.MLFLOW_RUN_ID: run_id, T.TEST_MACRO_F1: f"{row['test_macro_f1']:.6f}",
            T.GENERATOR_MODEL: f"{generator_name} v{generator_version}",
        })
        self.client.set_model_version_tag(generator_name, generator_version, T.CLIENT_MODEL,
                                          f"{client_name} v{client_version}")
        decision = registry.promote(client_name, client_version, registry.GatePolicy.from_config(fed_config.registry),
                                    test_set)
        before, after = row["server_before_fidelity"], row["server_after_fidelity"]
        gates = [
            registry.Gate("validation", validated, f"{registry.TAG_VALIDATION}={lineage[registry.TAG_VALIDATION]}"),
            registry.Gate("client_model_promoted", decision.promoted,
                          f"{client_name} v{client_version}: " + "; ".join(
                              f"{g.name}={'pass' if g.passed else 'FAIL'}" for g in decision.gates)),
            registry.Gate("fidelity_not_lower", after >= before, f"fidelity {after:.4f} after vs {before:.4f} before"),
        ]
        generator_decision = registry.promote_on(generator_name, generator_version, gates)
        for name, outcome in (("client", decision), ("generator", generator_decision)):
            runs.log_dict(self.parent, outcome.to_dict(), f"registry/seed{config.seed}_{name}_promotion.json")

    def finish(self, outputs: list[Path]) -> None:
        for output in outputs:
            self.client.log_artifact(self.parent, str(output), "plots" if output.suffix == ".png" else None)
        self.client.set_terminated(self.parent, "FINISHED")
