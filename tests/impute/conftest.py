"""Synthetic two-modality federation with a known cross-modal relation: b = a @ W + small noise."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from fedmm.impute_config import ImputeConfig
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.tensors import TensorData

DIM = 6
SMALL = {
    "generator": {"rounds": 20, "local_epochs": 4, "hidden": 64, "lr": 0.003},
    "diffusion": {"rounds": 30, "local_epochs": 5, "hidden": 64, "lr": 0.003, "timesteps": 100, "sampling_steps": 8},
    "iterative": {"components": DIM, "max_iter": 5},
}


def sample(rng: np.random.Generator, n: int, weights: np.ndarray) -> tuple[dict, np.ndarray]:
    a = rng.standard_normal((n, DIM))
    b = a @ weights + 0.05 * rng.standard_normal((n, DIM))
    labels = (a[:, 0] + b[:, 1] > 0).astype(np.int64)
    return {"a": a.astype(np.float32), "b": b.astype(np.float32)}, labels


def masked_client(rng: np.random.Generator, n: int, weights: np.ndarray, missing: float) -> TensorData:
    """A client whose samples each lose one modality with probability ``missing``."""
    inputs, labels = sample(rng, n, weights)
    mask = np.ones((n, 2), dtype=bool)
    hit = rng.random(n) < missing
    mask[hit, rng.integers(0, 2, hit.sum())] = False
    inputs = {name: x * mask[:, [m]] for m, (name, x) in enumerate(inputs.items())}
    return TensorData.from_numpy(inputs, mask, labels)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny problems gain nothing from intra-op threads, and on shared cores the threads stall each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def make_client():
    return masked_client


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((DIM, DIM)) / np.sqrt(DIM)


@pytest.fixture(scope="module")
def clients(weights) -> list[TensorData]:
    rng = np.random.default_rng(2)
    return [masked_client(rng, n, weights, 0.3) for n in (160, 120, 200)]


def complete_set(seed: int, n: int, weights: np.ndarray) -> TensorData:
    inputs, labels = sample(np.random.default_rng(seed), n, weights)
    return TensorData.from_numpy(inputs, np.ones((n, 2), dtype=bool), labels)


@pytest.fixture(scope="module")
def test_set(weights) -> TensorData:
    return complete_set(3, 300, weights)


@pytest.fixture(scope="module")
def validation_set(weights) -> TensorData:
    return complete_set(4, 120, weights)


def trained_model(clients: list[TensorData]):
    """A small network briefly trained on the pooled synthetic data (its encoders define the latent space)."""
    stats = {name: [[0.0] * DIM, [1.0] * DIM] for name in ("a", "b")}
    spec = ModelSpec({"a": (DIM,), "b": (DIM,)}, num_classes=2, embed_dim=8, channels=4, fusion_dim=16, stats=stats)
    net = build_model(spec, 0)
    pooled = TensorData.concat(clients)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(pooled.inputs, pooled.mask), pooled.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def model(clients):
    return trained_model(clients)


@pytest.fixture(scope="module")
def config() -> ImputeConfig:
    return ImputeConfig.model_validate(SMALL)
