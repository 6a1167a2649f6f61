import subprocess
import sys

import pytest
from conftest import TINY

from fedmm.config import ConfigError, TrainConfig, config_from_dict, load_config
from fedmm.fl.params import DECLARED
from fedmm.fl.strategies import STRATEGIES


def test_defaults_and_overrides_validate():
    config = load_config(TINY, ["train.rounds=3", "mask.missing_rate={gyro: 0.5}", "partition.scheme=iid",
                                "partition.num_clients=4"])
    assert config.train.rounds == 3
    assert config.mask.missing_rate == {"gyro": 0.5}
    assert config.partition.num_clients == 4


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.roundz=3", "train.roundz: unknown key"),
        ("mask.missing_rate={gyro: 1.5}", "mask.missing_rate.gyro=1.5 must be in [0, 1)"),
        ("partition.num_clients=0", "partition.num_clients: Input should be greater than or equal to 1"),
        ("train.rounds=0", "train.rounds: Input should be greater than or equal to 1"),
        ("train.device=tpu", "train.device"),
        ("partition.scheme=dirichlet", "partition.num_clients is required"),
        ("train", "not of the form key.path=value"),
    ],
)
def test_bad_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(TINY, [override])
    assert message in str(error.value)


def test_imputer_selection_needs_a_validation_split():
    with pytest.raises(ConfigError, match="impute.select chooses generator, diffusion settings on the validation split"):
        load_config(TINY, ["data.val_fraction=0", "impute.evaluate=true"])
    assert load_config(TINY, ["data.val_fraction=0", "impute.evaluate=true", "impute.select={}"]).impute.select == {}


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)


def test_modality_group_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="sum to 0.5"):
        config_from_dict({"mask": {"client_modalities": [{"modalities": ["acc"], "fraction": 0.5}]}})


def test_hash_is_stable_and_sensitive():
    a, b = load_config(TINY), load_config(TINY)
    assert a.hash() == b.hash()
    assert a.hash() != load_config(TINY, ["seed=1"]).hash()
    assert a.hash("model") == load_config(TINY, ["seed=1"]).hash("model")


def test_overrides_leave_the_callers_mapping_alone():
    raw = {"train": {"rounds": 3}}
    assert config_from_dict(raw, ["train.strategy=fedprox"]).train.strategy == "fedprox"
    assert raw == {"train": {"rounds": 3}}


def test_each_strategy_is_declared_once_and_a_bad_value_fails_before_torch_loads():
    """``train.*`` is assembled from the light declarations; each strategy class reads its own."""
    script = (
        "import sys\n"
        "from fedmm.config import ConfigError, TrainConfig, config_from_dict\n"
        "from fedmm.fl.params import DECLARED, sections\n"
        "assert TrainConfig.model_fields['strategy'].annotation.__args__ == tuple(DECLARED)\n"
        "assert all(TrainConfig.model_fields[name].annotation is model for name, model in sections().items())\n"
        "try:\n"
        "    config_from_dict({'train': {'strategy': 'mmfed3', 'mmfed3': {'temperature': 0}}})\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
        "print(sorted(name for name in sys.modules if name.startswith('torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "invalid configuration: train.mmfed3.temperature: Input should be greater than 0", "[]",
    ]
    for name, info in DECLARED.items():
        cls = STRATEGIES[name]
        assert (cls.info, cls.name, cls.config_section) == (info, name, info.section)
        assert cls.needs_proxy == info.needs_proxy() == TrainConfig(strategy=name).needs_proxy
