"""Contribution audit of federated rounds: Shapley values per client and round, with uncertainty and flags.

A utility maps a boolean coalition matrix ``(k, n_players)`` to ``(k,)`` values; the
estimators (:mod:`.exact`, :mod:`.sampling`: one :class:`PermutationSampler`, stopping rules
that compose with ``|`` and ``&``) never look inside it and return
:class:`ValuationResult` objects. :class:`RoundGame` is the utility of one stored training
round; :func:`audit_round` (:mod:`.rounds`) values a round with per-validation-sample
evidence, :mod:`.inference` turns it into clustered intervals and tests, :mod:`.flags` holds
the flag rules, and :func:`audit_updates` (:mod:`.run`) values every round of a run's update
store into an :class:`AuditReport` (:mod:`.report`: ``audit.json``, tables, plots and
``report.html``). Everything else is imported from its defining submodule.
"""

from .exact import exact_shapley
from .flags import client_summary
from .report import AuditReport
from .result import ValuationResult
from .rounds import audit_round
from .run import audit_updates, audit_validation
from .sampling import (
    MaxEvaluations,
    PermutationSampler,
    RelativeStandardErrorBelow,
    StandardErrorBelow,
    StoppingCriterion,
    msr_banzhaf,
    permutation_shapley,
)
from .utility import RoundGame

__all__ = [
    "AuditReport",
    "MaxEvaluations",
    "PermutationSampler",
    "RelativeStandardErrorBelow",
    "RoundGame",
    "StandardErrorBelow",
    "StoppingCriterion",
    "ValuationResult",
    "audit_round",
    "audit_updates",
    "audit_validation",
    "client_summary",
    "exact_shapley",
    "msr_banzhaf",
    "permutation_shapley",
]
