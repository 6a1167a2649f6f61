"""Every ``fedmm.*`` MLflow tag, once, with the type of its value.

A :class:`Tag` is its key (a ``str``, so it is used as the key itself) carrying the type
its value has and :meth:`Tag.text`, which writes a value as the tag's text. A
:class:`Family` is a prefix under which keys are made (``fedmm.audit.history.<n>.``).
Modules write tags through these names only; a test keeps ``fedmm.*`` literals out of the package.
"""

from __future__ import annotations

import json
from typing import Any


class Tag(str):
    """An MLflow tag key with its value's ``type`` (str, int, float, bool, or dict/list stored as JSON)."""

    type: type
    doc: str
    digits: int

    def __new__(cls, key: str, type_: type, doc: str, digits: int = 6) -> Tag:
        tag = super().__new__(cls, key)
        tag.type, tag.doc, tag.digits = type_, doc, digits
        return tag

    def text(self, value: Any) -> str:
        """``value`` as this tag's text: booleans ``true``/``false``, floats to ``digits`` places, JSON."""
        if not isinstance(value, self.type):
            raise TypeError(f"tag {self} holds {self.type.__name__}, not {type(value).__name__}")
        if self.type is bool:
            return "true" if value else "false"
        if self.type is float:
            return f"{value:.{self.digits}f}"
        if self.type in (dict, list):
            return json.dumps(value)
        return str(value)


class Family(str):
    """A prefix of tag keys made at run time: ``family.key(name)`` is ``<prefix><name>``."""

    def key(self, name: object) -> str:
        return f"{self}{name}"


# What produced a run or version
CONFIG_HASH = Tag("fedmm.config_hash", str, "sha256 of the whole resolved config")
GIT_COMMIT = Tag("fedmm.git_commit", str, "the git commit the code ran at, or 'unknown'")
STRATEGY = Tag("fedmm.strategy", str, "the training strategy (or the task's method)")
TASK = Tag("fedmm.task", str, "which task a run belongs to (fedmkgc, fedmmkt)")
EXPERIMENT = Tag("fedmm.experiment", str, "the experiment matrix a run belongs to")
MLFLOW_RUN_ID = Tag("fedmm.mlflow_run_id", str, "the MLflow run a model version was logged by")
TRAINING_FINGERPRINT = Tag("fedmm.training_fingerprint", str, "hash of what training read (resume check)")
DATA_SHA256 = Tag("fedmm.data_sha256", str, "sha256 of the source data")
TEST_SHA256 = Tag("fedmm.test_sha256", str, "sha256 of the frozen test set")
PARTITION_SHA256 = Tag("fedmm.partition_sha256", str, "sha256 of the client partition and masks")
PARTITION_CONFIG_HASH = Tag("fedmm.partition_config_hash", str, "sha256 of the partition, mask and seed config")
MODEL_SHA256 = Tag("fedmm.model_sha256", str, "sha256 of the registered model's weights")
TEST_MACRO_F1 = Tag("fedmm.test_macro_f1", float, "the test macro-F1 the version registered with")

# Which process owns a run (the sweep of crashed runs reads these)
HOST = Tag("fedmm.host", str, "host of the process that opened the run")
PID = Tag("fedmm.pid", str, "pid of the process that opened the run")
PROCESS_STARTED = Tag("fedmm.process_started", str, "start time of that process (pids are reused)")
SWEPT = Tag("fedmm.swept", str, "why a run was marked FAILED by the sweep")
FAILED = Tag("fedmm.failed", str, "the error that made its own command mark the run FAILED")

# Registration and promotion
VALIDATION_PASSED = Tag("fedmm.validation_passed", bool, "both validation suites passed")
REGISTRATION = Tag("fedmm.registration", str, "pending or complete (two-phase registration)")
REPLACED_VERSION = Tag("fedmm.replaced_version", str, "the champion a promotion replaced, or none")
PROMOTION = Tag("fedmm.promotion", str, "promoted or the gates that failed")
GATES = Tag("fedmm.gates", str, "each gate's outcome, name=pass|FAIL")
ROLLED_BACK = Tag("fedmm.rolled_back", bool, "the champion was rolled back from")
PENDING_PROMOTION = Tag("fedmm.pending_promotion", dict,
                        "on a registered model: a decision being carried out (alias moves, version tags)")
GATE_POLICY = Tag("fedmm.gate_policy", dict, "the gate settings of the version's first decision")
ZENML_MODEL_VERSION = Tag("fedmm.zenml_model_version_id", str, "the version's twin in ZenML's Model Control Plane")
ZENML_PIPELINE_RUN = Tag("fedmm.zenml_pipeline_run", str, "the ZenML pipeline run that registered the version")

# The contribution audit of a version
AUDIT_STATE = Tag("fedmm.audit.state", str, "audited, or not_auditable (the reason tag says why)")
AUDIT_REASON = Tag("fedmm.audit.reason", str, "why there is nothing to audit")
AUDIT_HARMFUL = Tag("fedmm.audit.harmful_clients", list, "clients flagged harmful")
AUDIT_FLAGS = Tag("fedmm.audit.flags", dict, "each flagged client's flags")
AUDIT_GATE_FLAGS = Tag("fedmm.audit.gate_flags", list, "the flags the clean-audit gate blocks on")
AUDIT_THRESHOLDS = Tag("fedmm.audit.thresholds", dict, "the flag rules' thresholds")
AUDIT_TESTS = Tag("fedmm.audit.tests", dict, "each client's Holm p-value, interval and verdict")
AUDIT_GAME = Tag("fedmm.audit.game", str, "the cooperative game valued: weighting, metric, validation set")
AUDIT_REPORT = Tag("fedmm.audit.report", str, "where the audit's report is (runs:/...)")
AUDIT_COUNT = Tag("fedmm.audit.count", int, "how many audits the version has had")
AUDIT_RECORDED = Tag("fedmm.audit.recorded_at", str, "when the latest audit was recorded (UTC)")
AUDIT_PREFIX = Family("fedmm.audit.")
AUDIT_HISTORY = Family("fedmm.audit.history.")

# The imputation evaluation of a version
IMPUTATION_IMPUTERS = Tag("fedmm.imputation.imputers", str, "the imputers evaluated, comma-separated")
IMPUTATION_BEST = Tag("fedmm.imputation.best", str, "the imputer recovering most of the zero-to-oracle gap")
IMPUTATION_BEST_GAP = Tag("fedmm.imputation.best_gap_recovered", float, "its mean share of the gap", digits=4)
IMPUTATION_SELECTED = Family("fedmm.imputation.selected.")

# FedMKGC
KG_DATASET = Tag("fedmm.kg.dataset", str, "the knowledge graph")
KG_METHOD = Tag("fedmm.kg.method", str, "the FedMKGC method")
KG_TEST_MRR = Tag("fedmm.kg.test_mrr", float, "filtered test MRR")
KG_PROTOCOL = Tag("fedmm.kg.protocol_sha256", str, "sha256 of the evaluation protocol")
KG_RANKS = Tag("fedmm.kg.ranks_sha256", str, "sha256 of every test query's rank")

# FedMMKT
MMKT_RUN_ID = Tag("fedmm.mmkt_run_id", str, "the FedMMKT run's config id")
GENERATOR_PRETRAIN_KEY = Tag("fedmm.generator_pretrain_key", str, "key of the pretrained generator")
PRETRAINED_ON = Tag("fedmm.pretrained_on", str, "what the generator was pretrained on")
GENERATOR_MODEL = Tag("fedmm.generator_model", str, "the generator version a client model goes with")
CLIENT_MODEL = Tag("fedmm.client_model", str, "the client model version a generator goes with")
MMKT_SERVER = Family("fedmm.")

ALL = tuple(value for value in dict(globals()).values() if isinstance(value, Tag))
"""Every tag, in declaration order."""
