import json

import numpy as np
import pytest

from fedmm.audit.exact import exact_shapley
from fedmm.audit.game import GloveGame
from fedmm.audit.result import ValuationResult


def test_ci_and_round_trip():
    r = ValuationResult(
        values=[1.0, 2.0, 3.0],
        stderr=[0.1, np.inf, 0.0],
        evaluations=7,
        method="x",
        counts=[3, 1, 3],
        residuals={"efficiency": 1e-3},
        info={"labels": np.array([0, 1, 1]), "stop_reason": "MaxEvaluations(7)"},
    )
    lo, hi = r.ci(0.95)
    assert np.isclose(hi[0] - lo[0], 2 * 1.959964 * 0.1, rtol=1e-5)
    assert lo[1] == -np.inf and hi[2] == lo[2] == 3.0
    lo90, hi90 = r.ci(0.9)
    assert hi90[0] - lo90[0] < hi[0] - lo[0]
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    back = ValuationResult.from_dict(d)
    np.testing.assert_array_equal(back.values, r.values)
    np.testing.assert_array_equal(back.stderr, r.stderr)
    np.testing.assert_array_equal(back.counts, r.counts)
    assert back.evaluations == 7 and back.method == "x" and back.residuals == r.residuals
    assert back.info["labels"] == [0, 1, 1]
    np.testing.assert_array_equal(r.ranking(), [2, 1, 0])
    with pytest.raises(ValueError):
        r.ci(1.5)


def test_exact_result_serialises_with_residuals():
    r = exact_shapley(GloveGame([0], [1, 2]), 3)
    lo, hi = r.ci()
    np.testing.assert_array_equal(lo, hi)
    back = ValuationResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert set(back.residuals) >= {"efficiency", "symmetry", "null_player"}
    np.testing.assert_allclose(back.values, r.values)
