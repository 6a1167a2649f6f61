"""Model registration, promotion gates, promotion and rollback (MLflow aliases, no stages).

- Registration is two-phase: the version is created with all its tags and
  ``fedmm.registration=pending``, gets the ``challenger`` alias, then is marked
  ``complete``. :func:`sweep` deletes half-registered versions (and marks runs whose process
  died FAILED) on the next start. The model is saved from code with npz/JSON weights and
  the SHA-256 of its files, checked before every load.
- Promotion to ``champion`` happens only when every gate passes: validation passed, test
  macro-F1 at least a floor, a test set of at least ``min_test_samples``, and the lower
  bound of a paired cluster-bootstrap interval of (challenger - champion) macro-F1 at least
  a margin, both scored on the challenger's frozen test set. A champion whose recorded test
  set differs is not comparable: the gate fails and says so. The old champion keeps
  ``previous-champion``; rollback goes through the same gates (less the comparison).
- Promotion and rollback hold the model's registry lock (:mod:`fedmm.tracking.lock`) across
  read-score-move, so concurrent promotions serialise. A decision (its alias moves and the
  tags on its versions) is first written as one pending-promotion record on the registered
  model; the next holder of the lock (or :func:`sweep`) completes a record a killed process
  left, so aliases are never left half-moved.
- The gate settings of a version's first decision (the run that registered it) are recorded
  on it (``fedmm.gate_policy``); ``fedmm promote`` and ``rollback`` use them unless overridden.
- The public API that the other tasks' registries (kg, mmkt) build on: :func:`register_logged`
  (two-phase registration), :func:`promote_with` (gates under the lock, decision recorded),
  :func:`model_version`, :func:`require_complete`, :func:`ensure_registered_model`.
- A re-audit keeps the earlier audits' tags under ``fedmm.audit.history.<n>.*``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from fedmm.artifacts import write_npz
from fedmm.audit.report import NOT_AUDITABLE
from fedmm.data.dataset import MultimodalDataset, load_npz
from fedmm.errors import UserError
from fedmm.fl.result import TrainResult, load_predictor
from fedmm.metrics import classification_metrics
from fedmm.runtime import tracking_uri
from fedmm.summary import Gate
from fedmm.tracking import lock, runs
from fedmm.tracking import tags as T
from fedmm.tracking.compare import paired_difference
from fedmm.tracking.pyfunc import (
    TamperedModelError,
    input_example,
    load_verified,
    model_input,
    predict_probabilities,
    save_pyfunc,
)
from fedmm.tracking.runs import client

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
TEST_SET_ARTIFACT = "eval/test_set.npz"
MODEL_ARTIFACT = "model"
TAG_VALIDATION = T.VALIDATION_PASSED
TAG_REPLACED = T.REPLACED_VERSION
TAG_AUDIT_HARMFUL = T.AUDIT_HARMFUL
TAG_AUDIT_FLAGS = T.AUDIT_FLAGS
TAG_AUDIT_GATE_FLAGS = T.AUDIT_GATE_FLAGS
TAG_AUDIT_STATE = T.AUDIT_STATE  # audited, or not_auditable (nothing to value; the reason tag says why)
TAG_AUDIT_REASON = T.AUDIT_REASON
TAG_AUDIT_COUNT = T.AUDIT_COUNT
TAG_AUDIT_RECORDED = T.AUDIT_RECORDED
AUDIT_HISTORY = T.AUDIT_HISTORY
TAG_TEST_SHA = T.TEST_SHA256
TAG_MODEL_SHA = T.MODEL_SHA256
TAG_REGISTRATION = T.REGISTRATION
TAG_PENDING_DECISION = T.PENDING_PROMOTION
TAG_GATE_POLICY = T.GATE_POLICY
TAG_ROLLED_BACK = T.ROLLED_BACK
PENDING, COMPLETE = "pending", "complete"


class RegistryError(UserError, RuntimeError):
    """A registry operation cannot be carried out."""


@dataclass(frozen=True)
class GatePolicy:
    """What a version must show to become champion (see ``RegistryConfig``)."""

    min_macro_f1: float
    margin: float = 0.0
    require_clean_audit: bool = False
    min_test_samples: int = 30
    confidence: float = 0.95
    resamples: int = 1000

    @classmethod
    def from_config(cls, registry_config, **overrides) -> GatePolicy:
        """The policy of a config's ``registry`` section; ``None`` overrides are ignored."""
        values = {
            "min_macro_f1": registry_config.min_macro_f1,
            "margin": registry_config.champion_margin,
            "require_clean_audit": registry_config.require_clean_audit,
            "min_test_samples": registry_config.min_test_samples,
            "confidence": registry_config.confidence,
            "resamples": registry_config.bootstrap_resamples,
        }
        return cls(**values).with_overrides(**overrides)

    def with_overrides(self, **overrides) -> GatePolicy:
        """This policy with the non-``None`` ``overrides`` replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def describe(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in asdict(self).items())


@dataclass
class PromotionDecision:
    """What a promotion (or rollback) attempt decided and why."""

    model_name: str
    version: str
    promoted: bool
    gates: list[Gate]
    champion_before: str | None
    aliases: dict[str, str] = field(default_factory=dict)
    test_samples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _test_inputs(test_set: MultimodalDataset) -> dict[str, np.ndarray]:
    return model_input(test_set.modalities, test_set.presence)


def ensure_registered_model(model_name: str) -> None:
    """Create the registered model unless it exists."""
    mlflow_client = client()
    try:
        mlflow_client.create_registered_model(model_name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def register_model(
    run_id: str,
    model_name: str,
    result: TrainResult,
    test_set: MultimodalDataset,
    tags: dict[str, str],
) -> str:
    """Log the model and the frozen test set to the run, register it in two phases, end the run.

    Phase one creates the version with every tag and ``fedmm.registration=pending`` (one
    call, so a version never exists without its lineage); the ``challenger`` alias follows;
    phase two marks it ``complete``. Only complete versions can be promoted.
    """
    mlflow_client = client()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_npz(folder / "test_set.npz", test_set.to_arrays())
        mlflow_client.log_artifact(run_id, str(folder / "test_set.npz"), "eval")
        network = result.save_predictor(folder / "network")
        example = input_example(test_set)
        signature = infer_signature(example, predict_probabilities(load_predictor(network), example))
        digest = save_pyfunc(folder / MODEL_ARTIFACT, network, example, signature)
        return register_saved(run_id, model_name, folder / MODEL_ARTIFACT, digest, tags)


def register_saved(run_id: str, model_name: str, saved: Path, digest: str, tags: dict[str, str]) -> str:
    """Log a saved pyfunc (``digest``: its :func:`directory_sha256`) to the run and register it in two phases; end the run."""
    client().log_artifacts(run_id, str(saved), MODEL_ARTIFACT)
    return register_logged(run_id, model_name, digest, tags)


def register_logged(run_id: str, model_name: str, digest: str, tags: dict[str, str]) -> str:
    """Register the model logged under the run's ``model`` artifact folder in two phases; end the run.

    Phase one creates the version with every tag, the model's SHA-256 ``digest`` and
    ``fedmm.registration=pending``; the ``challenger`` alias follows; phase two marks it
    ``complete``. :func:`sweep` deletes a version a killed process left pending.
    """
    mlflow_client = client()
    ensure_registered_model(model_name)
    source = f"{mlflow_client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    all_tags = {**{k: str(v) for k, v in tags.items()}, TAG_MODEL_SHA: digest, TAG_REGISTRATION: PENDING}
    version = str(mlflow_client.create_model_version(model_name, source, run_id=run_id, tags=all_tags).version)
    mlflow_client.set_registered_model_alias(model_name, CHALLENGER, version)
    mlflow_client.set_model_version_tag(model_name, version, TAG_REGISTRATION, COMPLETE)
    runs.end_run(run_id)
    return version


def sweep() -> list[str]:
    """Clean up after crashed or killed processes; returns one line per thing swept.

    Runs whose process on this host is gone are marked FAILED; versions still ``pending``
    whose run is no longer RUNNING are deleted (they never finished registering); promotions
    and rollbacks a killed process left half-done are completed.
    """
    swept = runs.sweep_stale_runs()
    mlflow_client = client()
    try:
        pending = mlflow_client.search_model_versions(f"tags.`{TAG_REGISTRATION}` = '{PENDING}'")
        swept.extend(complete_interrupted())
    except MlflowException:
        return swept
    for version in pending:
        if not version.run_id or mlflow_client.get_run(version.run_id).info.status != "RUNNING":
            mlflow_client.delete_model_version(version.name, version.version)
            swept.append(f"half-registered {version.name} v{version.version} deleted")
    return swept


def _download_model(model_name: str, version: str, folder: Path) -> Path:
    uri = client().get_model_version_download_uri(model_name, version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))


def predict_version(model_name: str, version: str, test_set: MultimodalDataset) -> np.ndarray:
    """Predicted classes of a registered version on a test set (all modalities present).

    The version's files are checked against the SHA-256 recorded at registration first.
    """
    expected = client().get_model_version(model_name, version).tags.get(TAG_MODEL_SHA)
    with tempfile.TemporaryDirectory() as tmp:
        path = _download_model(model_name, version, Path(tmp))
        try:
            model = load_verified(path, expected, f"{model_name} v{version}")
        except TamperedModelError as error:
            raise RegistryError(str(error)) from None
        probabilities = model.predict(_test_inputs(test_set))
    return np.asarray(probabilities).argmax(1)


def load_model(model_name: str, alias: str = CHAMPION):
    """The registered version an alias names, as an MLflow pyfunc, loaded only after every one of its files
    matched the SHA-256 recorded in the registry at registration (nothing of it is imported before).

    Plain ``mlflow.pyfunc.load_model`` trusts the artifact store: it runs the model's code as stored.
    """
    try:
        version = str(client().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        raise RegistryError(f"model {model_name!r} has no version with alias {alias!r}") from None
    expected = model_version(model_name, version).tags.get(TAG_MODEL_SHA)
    with tempfile.TemporaryDirectory() as tmp:
        path = _download_model(model_name, version, Path(tmp))
        try:
            return load_verified(path, expected, f"{model_name}@{alias} (v{version})")
        except TamperedModelError as error:
            raise RegistryError(str(error)) from None


def score_version(model_name: str, version: str, test_set: MultimodalDataset) -> float:
    """Macro-F1 of a registered version on a test set (all modalities present)."""
    return classification_metrics(test_set.labels, predict_version(model_name, version, test_set))["macro_f1"]


def aliases(model_name: str) -> dict[str, str]:
    """Alias -> version of a registered model."""
    return {alias: str(version) for alias, version in client().get_registered_model(model_name).aliases.items()}


def version_aliases(model_name: str, version: str) -> list[str]:
    return sorted(alias for alias, v in aliases(model_name).items() if str(v) == str(version))


def _carry_out(model_name: str, record: dict) -> None:
    """Apply a decision record: move its aliases (None deletes), set its version tags, then drop the record.

    Every step sets a value, so applying a record again, after a kill part-way, ends in the same state.
    """
    mlflow_client = client()
    for alias, version in record["moves"].items():
        if version is None:
            mlflow_client.delete_registered_model_alias(model_name, alias)
        else:
            mlflow_client.set_registered_model_alias(model_name, alias, version)
    for version, tags in record["tags"].items():
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(model_name, version, key, value)
    mlflow_client.delete_registered_model_tag(model_name, TAG_PENDING_DECISION)


def _commit(model_name: str, record: dict) -> None:
    """Write a decision as one pending record on the registered model, then carry it out (the caller holds the lock)."""
    client().set_registered_model_tag(model_name, TAG_PENDING_DECISION, json.dumps(record))
    _carry_out(model_name, record)


def _complete_pending(model_name: str) -> str | None:
    """Carry out the decision a killed process left recorded but unfinished (the caller holds the lock)."""
    try:
        recorded = client().get_registered_model(model_name).tags.get(TAG_PENDING_DECISION)
    except MlflowException:  # no such model yet: nothing pending
        return None
    if recorded is None:
        return None
    record = json.loads(recorded)
    _carry_out(model_name, record)
    return f"interrupted {record['what']} of {model_name} v{record['version']} completed"


@contextmanager
def locked(model_name: str) -> Iterator[str | None]:
    """Hold the model's registry lock (file lock on SQLite, advisory lock on PostgreSQL).

    A decision a killed process left half-done is completed first; yields the line that says
    so, else None.
    """
    try:
        with lock.registry_lock(tracking_uri(), model_name):
            yield _complete_pending(model_name)
    except lock.LockError as error:
        raise RegistryError(str(error)) from None


def complete_interrupted() -> list[str]:
    """Complete every decision a killed process left pending, each under its model's lock; one line each."""
    mlflow_client, done, token = client(), [], None
    while True:
        page = mlflow_client.search_registered_models(max_results=1000, page_token=token)
        for model in page:
            if TAG_PENDING_DECISION in model.tags:
                with locked(model.name) as completed:
                    done.append(completed)
        token = page.token
        if not token:
            return [line for line in done if line]


def load_test_set(model_name: str, version: str) -> MultimodalDataset:
    """The frozen test set logged with a version's run, checked against its recorded hash."""
    registered = client().get_model_version(model_name, version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=registered.run_id, artifact_path=TEST_SET_ARTIFACT, dst_path=tmp
            )
        except (MlflowException, OSError):
            raise RegistryError(f"{model_name} v{version} has no frozen test set ({TEST_SET_ARTIFACT})") from None
        test_set = load_npz(path)
    recorded = registered.tags.get(TAG_TEST_SHA)
    if recorded is not None and recorded != test_set.content_hash():
        raise RegistryError(
            f"the frozen test set of {model_name} v{version} does not match its recorded {TAG_TEST_SHA}: "
            "refusing to gate on a modified test set"
        )
    return test_set


def model_version(model_name: str, version: str):
    """A registered version (MLflow's ``ModelVersion``); :class:`RegistryError` when there is none."""
    try:
        return client().get_model_version(model_name, str(version))
    except MlflowException:
        raise RegistryError(f"model {model_name!r} has no version {version}") from None


def require_complete(registered) -> None:
    """Refuse a version that is still half-registered (:class:`RegistryError`)."""
    state = registered.tags.get(TAG_REGISTRATION)
    if state is not None and state != COMPLETE:
        raise RegistryError(
            f"{registered.name} v{registered.version} is half-registered ({TAG_REGISTRATION}={state}): "
            "it cannot be promoted"
        )


def audit_record_tags(existing: dict[str, str], audit: dict[str, str]) -> dict[str, str]:
    """The tags that record a new audit on a version, keeping the earlier ones.

    The current audit's tags move to ``fedmm.audit.history.<n>.*`` (n = 1 for the first
    audit), and ``fedmm.audit.count`` says how many audits the version has had.
    """
    count = int(existing.get(TAG_AUDIT_COUNT, "1" if TAG_AUDIT_HARMFUL in existing else "0"))
    archived = {
        f"{AUDIT_HISTORY}{count}.{key[len(T.AUDIT_PREFIX):]}": value
        for key, value in existing.items()
        if key.startswith(T.AUDIT_PREFIX) and not key.startswith(AUDIT_HISTORY) and key != TAG_AUDIT_COUNT
    }
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {**archived, **audit, TAG_AUDIT_COUNT: str(count + 1), TAG_AUDIT_RECORDED: stamp}


def record_audit(model_name: str, version: str, audit: dict[str, str]) -> None:
    """Tag a version with a (re-)audit, keeping each earlier audit under the history tags."""
    mlflow_client = client()
    existing = mlflow_client.get_model_version(model_name, str(version)).tags
    for key, value in audit_record_tags(existing, audit).items():
        mlflow_client.set_model_version_tag(model_name, str(version), key, value)


def audit_gate(tags: dict[str, str]) -> Gate:
    """Passes when the version's contribution audit flagged no client with one of its gate flags.

    The audit records its flags per client and the flags that block promotion
    (``audit.gate_flags``; harmful only when an older audit did not record them). A run with
    nothing to audit (state ``not_auditable``, e.g. FedMEKT sends no parameter deltas) passes,
    with the recorded reason.
    """
    if tags.get(TAG_AUDIT_STATE) == NOT_AUDITABLE:
        return Gate("clean_audit", True, f"nothing to audit: {tags.get(TAG_AUDIT_REASON, 'no reason recorded')}")
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


def _which_audit(tags: dict[str, str]) -> str:
    """Which of a version's audits the clean-audit gate read."""
    count = tags.get(TAG_AUDIT_COUNT)
    if count is None:
        return ""
    return f" (audit {count} of {count}, recorded {tags.get(TAG_AUDIT_RECORDED, 'at registration')})"


def _comparable(champion_tags: dict[str, str], test_sha: str, champion: str) -> str | None:
    """Why the champion cannot be compared on this test set, or None when it can."""
    recorded = champion_tags.get(TAG_TEST_SHA)
    if recorded is None:
        return f"champion v{champion} records no {TAG_TEST_SHA}: its test set is unknown, the scores are not comparable"
    if recorded != test_sha:
        return (
            f"champion v{champion} was tested on test set {recorded[:12]}, this version on {test_sha[:12]} "
            "(different data or split): the scores are not comparable and the champion may have trained on "
            "these test samples; retrain on the champion's data and split, or retire the champion first"
        )
    return None


def _champion_gate(
    model_name: str, champion: str, test_set: MultimodalDataset, predicted: np.ndarray, policy: GatePolicy
) -> Gate:
    champion_tags = model_version(model_name, champion).tags
    reason = _comparable(champion_tags, test_set.content_hash(), champion)
    if reason is not None:
        return Gate("beats_champion", False, reason)
    try:
        champion_predicted = predict_version(model_name, champion, test_set)
    except Exception as error:  # an incompatible champion cannot be compared: the gate fails
        return Gate("beats_champion", False, f"champion v{champion} cannot score this test set: {error}")
    difference = paired_difference(
        test_set.labels, predicted, champion_predicted, test_set.recording, policy.confidence, policy.resamples
    )
    return Gate(
        "beats_champion",
        difference.low >= policy.margin,
        f"macro-F1 {difference.a:.4f} vs champion v{champion} {difference.b:.4f}: difference "
        f"{difference.estimate:+.4f}, {difference.level:.0%} paired bootstrap interval "
        f"[{difference.low:+.4f}, {difference.high:+.4f}] over {difference.clusters} recordings; "
        f"promoted when the lower bound is at least the margin {policy.margin:.4f} "
        "(registry.confidence, registry.champion_margin)",
    )


def _own_gates(
    model_name: str, version: str, test_set: MultimodalDataset, policy: GatePolicy
) -> tuple[list[Gate], np.ndarray]:
    """The gates a version passes or fails on its own, and its predictions on the test set."""
    tags = model_version(model_name, version).tags
    validated = tags.get(TAG_VALIDATION) == "true"
    gates = [Gate("validation", validated, f"{TAG_VALIDATION}={tags.get(TAG_VALIDATION, 'missing')}")]
    if policy.require_clean_audit:
        audit = audit_gate(tags)
        gates.append(Gate(audit.name, audit.passed, audit.detail + _which_audit(tags)))
    predicted = predict_version(model_name, version, test_set)
    score = classification_metrics(test_set.labels, predicted)["macro_f1"]
    gates.append(
        Gate("min_macro_f1", score >= policy.min_macro_f1, f"test macro-F1 {score:.4f} vs floor {policy.min_macro_f1:.4f}")
    )
    recordings = len(np.unique(test_set.recording))
    gates.append(
        Gate("test_size", len(test_set) >= policy.min_test_samples,
             f"{len(test_set)} test samples from {recordings} recordings vs minimum {policy.min_test_samples} "
             "(registry.min_test_samples)")
    )
    return gates, predicted


def evaluate_gates(
    model_name: str,
    version: str,
    test_set: MultimodalDataset,
    policy: GatePolicy,
    champion: str | None,
) -> list[Gate]:
    """The promotion gates for a version against the current ``champion``, each with its evidence."""
    gates, predicted = _own_gates(model_name, version, test_set, policy)
    if champion is None or champion == version:
        gates.append(Gate("beats_champion", True, "no other champion to beat"))
    else:
        gates.append(_champion_gate(model_name, champion, test_set, predicted, policy))
    return gates


def _decision_tags(outcome: str, gates: list[Gate]) -> dict[str, str]:
    return {T.PROMOTION: outcome, T.GATES: "; ".join(f"{g.name}={'pass' if g.passed else 'FAIL'}" for g in gates)}


def policy_tags(policy: GatePolicy) -> dict[str, str]:
    """The tag that records a version's gate settings."""
    return {TAG_GATE_POLICY: json.dumps(asdict(policy), sort_keys=True)}


def recorded_policy(model_name: str, version: str) -> GatePolicy | None:
    """The gate settings recorded with a version (at its first decision), else None."""
    recorded = model_version(model_name, version).tags.get(TAG_GATE_POLICY)
    return GatePolicy(**json.loads(recorded)) if recorded else None


def promote(
    model_name: str,
    version: str,
    policy: GatePolicy,
    test_set: MultimodalDataset | None = None,
) -> PromotionDecision:
    """Promote a version to ``champion`` if every gate passes; record the decision on it.

    The model's registry lock is held from reading the champion to moving the aliases, so a
    concurrent promotion waits and is then compared with whichever version won. The first
    decision on a version records ``policy`` with it (:func:`recorded_policy`).
    """
    version = str(version)
    with locked(model_name):
        registered = model_version(model_name, version)
        require_complete(registered)
        test_set = test_set if test_set is not None else load_test_set(model_name, version)
        gates = evaluate_gates(model_name, version, test_set, policy, aliases(model_name).get(CHAMPION))
        first = {} if TAG_GATE_POLICY in registered.tags else policy_tags(policy)
        return _decide(model_name, version, gates, len(test_set), first)


def promote_with(
    model_name: str, version: str, gates_for: Callable[[str | None], list[Gate]], test_samples: int = 0
) -> PromotionDecision:
    """Promote a complete version to ``champion`` if every gate of ``gates_for(champion)`` passes.

    The caller's gates (another task's evidence, e.g. FedMKGC's ranks) are evaluated under the
    model's registry lock against the current champion (None when there is none); the
    decision is recorded and carried out as :func:`promote` does.
    """
    version = str(version)
    with locked(model_name):
        require_complete(model_version(model_name, version))
        return _decide(model_name, version, gates_for(aliases(model_name).get(CHAMPION)), test_samples)


def promote_on(model_name: str, version: str, gates: list[Gate]) -> PromotionDecision:
    """Promote a complete version to ``champion`` if every one of the caller's ``gates`` passes (a model without a test set)."""
    return promote_with(model_name, version, lambda champion: gates)


def _decide(
    model_name: str, version: str, gates: list[Gate], test_samples: int, tags: dict[str, str] | None = None
) -> PromotionDecision:
    """Move the aliases when every gate passed (the caller holds the lock) and record the decision with ``tags``."""
    champion = aliases(model_name).get(CHAMPION)
    promoted = all(gate.passed for gate in gates) and champion != version
    version_tags = {**(tags or {}), **_decision_tags("promoted" if promoted else "rejected", gates)}
    moves = {}
    if promoted:
        moves = {PREVIOUS: champion, CHAMPION: version}
        version_tags[TAG_REPLACED] = champion or "none"
    _commit(model_name, {"what": "promotion", "version": version, "moves": moves, "tags": {version: version_tags}})
    return PromotionDecision(model_name, version, promoted, gates, champion, aliases(model_name), test_samples)


def rollback_target(model_name: str) -> str | None:
    """The version a rollback would restore (``previous-champion``), None when there is none or no such model."""
    try:
        return aliases(model_name).get(PREVIOUS)
    except MlflowException:
        return None


def rollback(model_name: str, policy: GatePolicy) -> PromotionDecision:
    """Make ``previous-champion`` the champion again, if it passes the gates on its own test set.

    Every gate but the comparison with the champion applies (validation, floor, test size,
    clean audit when required). ``previous-champion`` then becomes the version the restored
    champion had replaced, unless that is the version rolled back from: repeated rollbacks
    walk back the history instead of swapping two versions.
    """
    with locked(model_name):
        try:
            current = aliases(model_name)
        except MlflowException:
            raise RegistryError(f"no registered model {model_name!r}") from None
        previous = current.get(PREVIOUS)
        if previous is None:
            raise RegistryError(f"model {model_name!r} has no {PREVIOUS!r} version to roll back to")
        target = model_version(model_name, previous)
        require_complete(target)
        test_set = load_test_set(model_name, previous)
        gates, _ = _own_gates(model_name, previous, test_set, policy)
        champion = current.get(CHAMPION)
        passed = all(gate.passed for gate in gates)
        record = {"what": "rollback", "version": previous, "moves": {},
                  "tags": {previous: _decision_tags("rolled back to" if passed else "rollback rejected", gates)}}
        if passed:
            before = target.tags.get(TAG_REPLACED)
            record["moves"] = {CHAMPION: previous, PREVIOUS: None if before in (None, "none", champion) else before}
            if champion is not None:
                record["tags"][champion] = {TAG_ROLLED_BACK: "true"}
        _commit(model_name, record)
        return PromotionDecision(model_name, previous, passed, gates, champion, aliases(model_name), len(test_set))
