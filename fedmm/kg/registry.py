"""FedMKGC models in the MLflow registry: the same two-phase registration and aliases as the sensor model,
gated on filtered test MRR.

A version carries its lineage (graph file hashes, config, git commit, MLflow run) and, as the
frozen evaluation, every test query's filtered rank with the hash of what was ranked (each
client's candidate entities and queries, in order). Gates: validation passed, test MRR at
least ``min_mrr``, at least ``min_test_queries`` queries, and against the champion the lower
bound of the paired t interval of per-query reciprocal-rank differences at least the margin
(the paired t-test over per-query scores of IR evaluation; Smucker, Allan & Carterette, CIKM
2007). The champion's recorded ranks are checked against their hash before they are read; a
champion that ranked other queries or among other candidates is not comparable and the gate
fails. The champion's weights are not re-scored: its recorded ranks stand for it.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from fedmm.artifacts import read_npz, sha256_arrays, sha256_file, write_npz
from fedmm.data.validation import ValidationReport
from fedmm.kg.artifacts import Federation, TrainedKG
from fedmm.kg.config import TASK, KGRegistryConfig, KGRunConfig
from fedmm.kg.data import KG_SHA256
from fedmm.kg.experiment import paired_interval
from fedmm.runtime import tracking_uri
from fedmm.tracking import runs
from fedmm.tracking import tags as T
from fedmm.tracking.registry import (
    TAG_VALIDATION,
    Gate,
    PromotionDecision,
    RegistryError,
    client,
    model_version,
    promote_with,
    register_logged,
    version_aliases,
)

EXPERIMENT = "fedmm-kg"
MODEL_ARTIFACT = "model"
RANKS_ARTIFACT = "eval/test_ranks.npz"
TAG_MRR = T.KG_TEST_MRR
TAG_PROTOCOL = T.KG_PROTOCOL
TAG_RANKS_SHA = T.KG_RANKS


@dataclass(frozen=True)
class KGGatePolicy:
    min_mrr: float
    margin: float = 0.0
    confidence: float = 0.95
    min_test_queries: int = 100

    @classmethod
    def from_config(cls, registry: KGRegistryConfig) -> KGGatePolicy:
        return cls(registry.min_mrr, registry.champion_margin, registry.confidence, registry.min_test_queries)


def graph_sha256(dataset: str) -> str:
    """One hash of a graph's pinned file hashes."""
    return hashlib.sha256("".join(f"{name}:{sha}\n" for name, sha in sorted(KG_SHA256[dataset].items())).encode()).hexdigest()


def _folder_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def register_kg_model(run_id: str, model_name: str, federation: Federation, trained: TrainedKG, evaluation: dict,
                      tags: dict[str, str]) -> str:
    """Log the model (predictors and federation) and the test ranks to the run, register in two phases, end the run."""
    mlflow_client = client()
    ranks = {"ranks": np.asarray(evaluation["test_ranks"], dtype=np.float64)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_npz(folder / "test_ranks.npz", ranks)
        mlflow_client.log_artifact(run_id, str(folder / "test_ranks.npz"), "eval")
        trained.save(folder / MODEL_ARTIFACT / "predictors")
        federation.save(folder / MODEL_ARTIFACT / "federation")
        digest = _folder_sha256(folder / MODEL_ARTIFACT)
        mlflow_client.log_artifacts(run_id, str(folder / MODEL_ARTIFACT), MODEL_ARTIFACT)
    return register_logged(run_id, model_name, digest, {
        **tags, TAG_PROTOCOL: evaluation["protocol_sha256"], TAG_RANKS_SHA: sha256_arrays(ranks),
        TAG_MRR: f"{evaluation['test']['mrr']:.6f}"})


def recorded_ranks(model_name: str, version: str) -> np.ndarray:
    """A version's frozen test ranks, checked against the hash recorded at registration."""
    registered = model_version(model_name, version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=registered.run_id, artifact_path=RANKS_ARTIFACT, dst_path=tmp)
        except (MlflowException, OSError):
            raise RegistryError(f"{model_name} v{version} has no recorded test ranks ({RANKS_ARTIFACT})") from None
        arrays = read_npz(path)
    if sha256_arrays(arrays) != registered.tags.get(TAG_RANKS_SHA):
        raise RegistryError(f"the test ranks of {model_name} v{version} do not match their recorded {TAG_RANKS_SHA}: "
                            "refusing to gate on modified ranks")
    return arrays["ranks"]


def evaluate_kg_gates(model_name: str, version: str, policy: KGGatePolicy, champion: str | None) -> list[Gate]:
    """The promotion gates of a FedMKGC version against the current ``champion``, each with its evidence."""
    tags = model_version(model_name, version).tags
    reciprocal = 1 / recorded_ranks(model_name, version)
    mrr = float(reciprocal.mean())
    gates = [Gate("validation", tags.get(TAG_VALIDATION) == "true", f"{TAG_VALIDATION}={tags.get(TAG_VALIDATION, 'missing')}"),
             Gate("min_mrr", mrr >= policy.min_mrr, f"filtered test MRR {mrr:.4f} vs floor {policy.min_mrr:.4f}"),
             Gate("test_size", len(reciprocal) >= policy.min_test_queries,
                  f"{len(reciprocal)} test queries vs minimum {policy.min_test_queries}")]
    if champion is None or champion == version:
        return [*gates, Gate("beats_champion", True, "no other champion to beat")]
    champion_protocol = model_version(model_name, champion).tags.get(TAG_PROTOCOL)
    if champion_protocol != tags.get(TAG_PROTOCOL):
        return [*gates, Gate("beats_champion", False,
                             f"champion v{champion} ranked other queries or among other candidates "
                             f"({TAG_PROTOCOL} {str(champion_protocol)[:12]} vs {tags.get(TAG_PROTOCOL, '')[:12]}: another "
                             "graph, client count, triple share or seed): the MRRs are not comparable")]
    champion_reciprocal = 1 / recorded_ranks(model_name, champion)
    mean, low, high = paired_interval(reciprocal - champion_reciprocal, policy.confidence)
    return [*gates, Gate(
        "beats_champion", low >= policy.margin,
        f"MRR {mrr:.4f} vs champion v{champion} {champion_reciprocal.mean():.4f}: difference {mean:+.4f}, "
        f"{policy.confidence:.0%} paired t interval [{low:+.4f}, {high:+.4f}] over {len(reciprocal)} queries; "
        f"promoted when the lower bound is at least the margin {policy.margin:.4f}")]


def promote_kg(model_name: str, version: str, policy: KGGatePolicy) -> PromotionDecision:
    """Promote a FedMKGC version to ``champion`` if every gate passes, under the model's registry lock."""
    version = str(version)
    return promote_with(model_name, version, lambda champion: evaluate_kg_gates(model_name, version, policy, champion),
                        len(recorded_ranks(model_name, version)))


def start_kg_run(config: KGRunConfig) -> str:
    """The MLflow run of one FedMKGC pipeline run, with the run config as parameters."""
    mlflow_client = client()
    run_id = mlflow_client.create_run(runs.experiment_id(EXPERIMENT), run_name=f"{config.run.dataset}/{config.run.method}",
                                      tags={T.TASK: TASK, T.GIT_COMMIT: runs.git_commit()}).info.run_id
    for key, value in runs.flatten(config.model_dump(mode="json")).items():
        mlflow_client.log_param(run_id, key, value)
    return run_id


def record_and_register_kg(config: KGRunConfig, report: ValidationReport, federation: Federation, trained: TrainedKG,
                           evaluation: dict, extra_tags: dict[str, str] | None = None) -> dict:
    """Open the MLflow run, log the validation and the metrics, register the model as ``challenger`` and
    promote it if the gates pass. A failed validation registers nothing (:class:`DataValidationError`).

    Returns the run summary.
    """
    report.raise_if_failed()
    run_id = start_kg_run(config)
    runs.log_validation(run_id, report)
    mlflow_client = client()
    for split in ("test", "valid"):
        for key, value in evaluation[split].items():
            mlflow_client.log_metric(run_id, f"{split}.{key.replace('@', '_at_')}", float(value))
    runs.log_dict(run_id, evaluation["report"], "federation/report.json")
    tags = {T.TASK: TASK, T.KG_DATASET: config.run.dataset, T.KG_METHOD: config.run.method,
            T.DATA_SHA256: graph_sha256(config.run.dataset), T.CONFIG_HASH: config.run.run_id(),
            T.GIT_COMMIT: runs.git_commit(), T.MLFLOW_RUN_ID: run_id,
            TAG_VALIDATION: "true" if report.success else "false", **(extra_tags or {})}
    model_name = config.registry.model_name
    version = register_kg_model(run_id, model_name, federation, trained, evaluation, tags)
    decision = promote_kg(model_name, version, KGGatePolicy.from_config(config.registry))
    runs.log_dict(run_id, decision.to_dict(), "registry/promotion.json")
    return {"task": TASK, "dataset": config.run.dataset, "method": config.run.method,
            **{f"test_{k}": v for k, v in evaluation["test"].items()},
            "model_name": model_name, "model_version": version, "aliases": version_aliases(model_name, version),
            "promoted": decision.promoted, "gates": [{"name": g.name, "passed": g.passed, "detail": g.detail}
                                                     for g in decision.gates],
            "tracking_uri": tracking_uri(), "mlflow_run_id": run_id, "config_hash": config.run.run_id()}
