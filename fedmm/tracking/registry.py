"""Model registration, promotion gates, promotion and rollback (MLflow aliases, no stages).

- A new version gets the ``challenger`` alias and lineage tags.
- Promotion to ``champion`` happens only when every gate passes: validation passed, test
  macro-F1 at least a floor, and at least the current champion's macro-F1 *on the same
  frozen test set* (both models are re-scored on the candidate's logged test set) plus a
  margin. The old champion keeps ``previous-champion``.
- Alias moves are all-or-nothing: on any failure the aliases are restored as they were.
"""

from __future__ import annotations

import json

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

import fedmm
from fedmm.artifacts import write_npz
from fedmm.data.dataset import MultimodalDataset, load_npz
from fedmm.fl.evaluation import classification_metrics
from fedmm.fl.result import TrainResult, load_predictor
from fedmm.tracking.pyfunc import MultimodalPyfunc, model_input, predict_probabilities
from fedmm.tracking.runs import client

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
TEST_SET_ARTIFACT = "eval/test_set.npz"
TAG_VALIDATION = "fedmm.validation_passed"
TAG_REPLACED = "fedmm.replaced_version"
TAG_AUDIT_HARMFUL = "fedmm.audit.harmful_clients"
TAG_AUDIT_FLAGS = "fedmm.audit.flags"
TAG_AUDIT_GATE_FLAGS = "fedmm.audit.gate_flags"
PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "mlflow==3.17.2"]


class RegistryError(RuntimeError):
    """A registry operation cannot be carried out."""


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    detail: str


@dataclass
class PromotionDecision:
    """What a promotion attempt decided and why."""

    model_name: str
    version: str
    promoted: bool
    gates: list[Gate]
    champion_before: str | None
    aliases: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _test_inputs(test_set: MultimodalDataset) -> dict[str, np.ndarray]:
    presence = np.ones((len(test_set), len(test_set.modalities)), dtype=bool)
    return model_input(test_set.modalities, presence)


def register_model(
    run_id: str,
    model_name: str,
    result: TrainResult,
    test_set: MultimodalDataset,
    tags: dict[str, str],
) -> str:
    """Log the model to the run, register it, tag its lineage, alias it ``challenger``.

    The frozen test set is logged with the run so later promotions re-score on it. Ends the
    MLflow run.
    """
    mlflow_client = client()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_npz(folder / "test_set.npz", test_set.to_arrays())
        mlflow_client.log_artifact(run_id, str(folder / "test_set.npz"), "eval")
        network = result.save_predictor(folder / "network")
        example = {k: v[:4] for k, v in _test_inputs(test_set).items()}
        signature = infer_signature(example, predict_probabilities(load_predictor(network), example))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=MultimodalPyfunc(),
                artifacts={"network": str(network)},
                signature=signature,
                input_example=example,
                code_paths=[str(Path(fedmm.__file__).parent)],
                pip_requirements=PIP_REQUIREMENTS,
                registered_model_name=model_name,
            )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(model_name, version, key, str(value))
    mlflow_client.set_registered_model_alias(model_name, CHALLENGER, version)
    return version


def score_version(model_name: str, version: str, test_set: MultimodalDataset) -> float:
    """Macro-F1 of a registered version on a test set (all modalities present)."""
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    probabilities = model.predict(_test_inputs(test_set))
    return classification_metrics(test_set.labels, np.asarray(probabilities).argmax(1))["macro_f1"]


def aliases(model_name: str) -> dict[str, str]:
    """Alias -> version of a registered model."""
    return {alias: str(version) for alias, version in client().get_registered_model(model_name).aliases.items()}


def version_aliases(model_name: str, version: str) -> list[str]:
    return sorted(alias for alias, v in aliases(model_name).items() if str(v) == str(version))


def _restore(model_name: str, snapshot: dict[str, str]) -> None:
    mlflow_client = client()
    for alias in ALIASES:
        if alias in snapshot:
            mlflow_client.set_registered_model_alias(model_name, alias, snapshot[alias])
        else:
            try:
                mlflow_client.delete_registered_model_alias(model_name, alias)
            except MlflowException:
                pass


def _apply(model_name: str, moves: dict[str, str | None]) -> None:
    """Move aliases (None deletes) all-or-nothing."""
    snapshot = aliases(model_name)
    mlflow_client = client()
    try:
        for alias, version in moves.items():
            if version is None:
                if alias in snapshot:
                    mlflow_client.delete_registered_model_alias(model_name, alias)
            else:
                mlflow_client.set_registered_model_alias(model_name, alias, version)
    except BaseException:
        _restore(model_name, snapshot)
        raise


def load_test_set(model_name: str, version: str) -> MultimodalDataset:
    """The frozen test set logged with a version's run."""
    run_id = client().get_model_version(model_name, version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TEST_SET_ARTIFACT, dst_path=tmp)
        return load_npz(path)


def audit_gate(tags: dict[str, str]) -> Gate:
    """Passes when the version's contribution audit flagged no client with one of its gate flags.

    The audit records its flags per client and the flags that block promotion
    (``audit.gate_flags``; harmful only when an older audit did not record them).
    """
    recorded = tags.get(TAG_AUDIT_HARMFUL)
    if recorded is None:
        return Gate("clean_audit", False, "no contribution audit is recorded on this version")
    gate_flags = json.loads(tags.get(TAG_AUDIT_GATE_FLAGS, '["harmful"]'))
    flags = {int(c): found for c, found in json.loads(tags.get(TAG_AUDIT_FLAGS, "{}")).items()}
    flags.update({c: sorted({*flags.get(c, []), "harmful"}) for c in json.loads(recorded)})
    blocking = {c: [f for f in found if f in gate_flags] for c, found in sorted(flags.items())}
    blocking = {c: found for c, found in blocking.items() if found}
    if not blocking:
        return Gate("clean_audit", True, f"no client flagged {' or '.join(gate_flags)}")
    why = ", ".join(f"{c}: {'+'.join(found)}" for c, found in blocking.items())
    return Gate("clean_audit", False, f"clients {list(blocking)} flagged ({why}) contributed")


def evaluate_gates(
    model_name: str,
    version: str,
    test_set: MultimodalDataset,
    min_macro_f1: float,
    margin: float,
    require_clean_audit: bool = False,
) -> list[Gate]:
    """The promotion gates for a version, each with its evidence."""
    mlflow_client = client()
    tags = mlflow_client.get_model_version(model_name, version).tags
    validated = tags.get(TAG_VALIDATION) == "true"
    gates = [Gate("validation", validated, f"{TAG_VALIDATION}={tags.get(TAG_VALIDATION, 'missing')}")]
    if require_clean_audit:
        gates.append(audit_gate(tags))
    score = score_version(model_name, version, test_set)
    gates.append(Gate("min_macro_f1", score >= min_macro_f1, f"test macro-F1 {score:.4f} vs floor {min_macro_f1:.4f}"))
    champion = aliases(model_name).get(CHAMPION)
    if champion is None or champion == version:
        gates.append(Gate("beats_champion", True, "no other champion to beat"))
    else:
        try:
            best = score_version(model_name, champion, test_set)
        except Exception as error:  # an incompatible champion cannot be compared: the gate fails
            gates.append(Gate("beats_champion", False, f"champion v{champion} cannot score this test set: {error}"))
        else:
            gates.append(
                Gate(
                    "beats_champion",
                    score >= best + margin,
                    f"test macro-F1 {score:.4f} vs champion v{champion} {best:.4f} + margin {margin:.4f}",
                )
            )
    return gates


def promote(
    model_name: str,
    version: str,
    min_macro_f1: float,
    margin: float,
    test_set: MultimodalDataset | None = None,
    require_clean_audit: bool = False,
) -> PromotionDecision:
    """Promote a version to ``champion`` if every gate passes; record the decision on it."""
    mlflow_client = client()
    version = str(version)
    try:
        mlflow_client.get_model_version(model_name, version)
    except MlflowException:
        raise RegistryError(f"model {model_name!r} has no version {version}") from None
    test_set = test_set if test_set is not None else load_test_set(model_name, version)
    gates = evaluate_gates(model_name, version, test_set, min_macro_f1, margin, require_clean_audit)
    champion = aliases(model_name).get(CHAMPION)
    promoted = all(gate.passed for gate in gates) and champion != version
    if promoted:
        _apply(model_name, {PREVIOUS: champion, CHAMPION: version})
        if champion is not None:
            mlflow_client.set_model_version_tag(model_name, version, TAG_REPLACED, champion)
    decision = PromotionDecision(model_name, version, promoted, gates, champion, aliases(model_name))
    mlflow_client.set_model_version_tag(model_name, version, "fedmm.promotion", "promoted" if promoted else "rejected")
    mlflow_client.set_model_version_tag(
        model_name, version, "fedmm.gates", "; ".join(f"{g.name}={'pass' if g.passed else 'FAIL'}" for g in gates)
    )
    return decision


def rollback(model_name: str) -> dict[str, str]:
    """Make ``previous-champion`` the champion again; returns the aliases after the move."""
    current = aliases(model_name)
    previous = current.get(PREVIOUS)
    if previous is None:
        raise RegistryError(f"model {model_name!r} has no {PREVIOUS!r} version to roll back to")
    mlflow_client = client()
    before = mlflow_client.get_model_version(model_name, previous).tags.get(TAG_REPLACED)
    _apply(model_name, {CHAMPION: previous, PREVIOUS: before})
    if CHAMPION in current:
        mlflow_client.set_model_version_tag(model_name, current[CHAMPION], "fedmm.rolled_back", "true")
    return aliases(model_name)
