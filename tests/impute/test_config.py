import pytest
from pydantic import ValidationError

from fedmm.impute.registry import IMPUTERS
from fedmm.impute_config import ImputeConfig


def test_the_config_knows_every_registered_imputer():
    assert ImputeConfig().imputers == tuple(IMPUTERS)


@pytest.mark.parametrize("bad, match", [
    ({"imputers": ["magic"]}, "Input should be"),
    ({"imputers": ["zero", "zero"]}, "twice"),
    ({"rates": [0.0]}, "must be in"),
    ({"patterns": ["gyro"]}, "neither"),
    ({"diffusion": {"timesteps": 10, "sampling_steps": 20}}, "must not exceed"),
    ({"knn": {"neighbours": 3}}, "Extra inputs"),
    ({"select": {"generator": [{"distil_weight": 1.0}]}}, r"impute.select.generator: candidate .* is invalid \(distil_weight"),
    ({"select": {"zero": [{"n_neighbors": 3}]}}, "Input should be"),
])
def test_bad_values_fail_up_front(bad, match):
    with pytest.raises(ValidationError, match=match):
        ImputeConfig.model_validate(bad)
