"""The contribution-audit promotion gate reads the audit's verdict recorded on a model version."""

import json

from fedmm.tracking.registry import TAG_AUDIT_FLAGS, TAG_AUDIT_GATE_FLAGS, TAG_AUDIT_HARMFUL, audit_gate


def test_audit_gate_needs_a_recorded_clean_audit():
    missing = audit_gate({})
    assert not missing.passed and "no contribution audit" in missing.detail
    clean = audit_gate({TAG_AUDIT_HARMFUL: "[]"})
    assert clean.passed and clean.name == "clean_audit"
    flagged = audit_gate({TAG_AUDIT_HARMFUL: "[3, 7]"})
    assert not flagged.passed and "[3, 7]" in flagged.detail


def test_audit_gate_blocks_the_flags_the_audit_names():
    tags = {TAG_AUDIT_HARMFUL: "[]", TAG_AUDIT_FLAGS: json.dumps({"4": ["anomalous"], "6": ["free_rider"]})}
    blocked = audit_gate({**tags, TAG_AUDIT_GATE_FLAGS: json.dumps(["harmful", "anomalous"])})
    assert not blocked.passed and "[4]" in blocked.detail and "anomalous" in blocked.detail
    assert audit_gate({**tags, TAG_AUDIT_GATE_FLAGS: json.dumps(["harmful"])}).passed
    strict = audit_gate({**tags, TAG_AUDIT_GATE_FLAGS: json.dumps(["harmful", "anomalous", "free_rider"])})
    assert not strict.passed and "[4, 6]" in strict.detail
