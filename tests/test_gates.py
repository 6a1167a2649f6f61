"""The contribution-audit promotion gate reads the audit's verdict recorded on a model version."""

from fedmm.tracking.registry import TAG_AUDIT_HARMFUL, audit_gate


def test_audit_gate_needs_a_recorded_clean_audit():
    missing = audit_gate({})
    assert not missing.passed and "no contribution audit" in missing.detail
    clean = audit_gate({TAG_AUDIT_HARMFUL: "[]"})
    assert clean.passed and clean.name == "clean_audit"
    flagged = audit_gate({TAG_AUDIT_HARMFUL: "[3, 7]"})
    assert not flagged.passed and "[3, 7]" in flagged.detail
