"""impute.serve: the model is registered predicting through an imputer fitted federatedly after training."""

import pytest
import torch

from fedmm import workflow
from fedmm.config import ConfigError, config_from_dict
from fedmm.fl.result import TrainResult, load_predictor
from fedmm.impute.base import ImputingNet

RAW = {
    "data": {"window": 50, "stride": 50},
    "partition": {"scheme": "iid", "num_clients": 3},
    "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
    "train": {"rounds": 2, "batch_size": 64, "centralized": False},
    "mask": {"missing_rate": {"gyro": 0.5}},
    "impute": {"serve": "generator", "generator": {"rounds": 2, "local_epochs": 1, "hidden": 16}},
}


def test_served_imputer_is_fitted_saved_and_used_at_inference(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMM_HOME", str(tmp_path / "home"))
    config = config_from_dict(RAW)
    prepared = workflow.prepare_data(config)
    federated = workflow.make_partitions(config, prepared)
    result = workflow.train_models(config, prepared, federated)
    assert result.imputer is not None and result.imputer.name == "generator"
    predictor = result.predictor()
    assert isinstance(predictor, ImputingNet)
    inputs = {k: torch.as_tensor(v[:20], dtype=torch.float32) for k, v in prepared.dataset.modalities.items()}
    mask = torch.tensor([[True, False]] * 20)
    with torch.no_grad():
        served = predictor(inputs, mask)
        assert not torch.allclose(served, result.model()(inputs, mask))
        result.save(tmp_path / "saved")
        torch.testing.assert_close(TrainResult.load(tmp_path / "saved").predictor()(inputs, mask), served)
        torch.testing.assert_close(load_predictor(tmp_path / "saved")(inputs, mask), served)
    evaluation = workflow.evaluate_models(prepared, federated, result)
    assert "test_missing" in evaluation.protocols


def test_serving_an_imputer_is_checked_up_front():
    with pytest.raises(ConfigError, match="impute.serve"):
        config_from_dict(RAW, ["impute.serve=knn"])
    with pytest.raises(ConfigError, match="predicts with its own generator"):
        config_from_dict(RAW, ["train.strategy=fedmobile", "partition.proxy_fraction=0.1"])
