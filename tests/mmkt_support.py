"""A tiny FedMMKT setup for the tests: three mfeat clients, one round, a generator of a few hundred parameters."""

from pathlib import Path

import pytest

from fedmm.mmkt.config import FinetuneConfig, GeneratorConfig, MMKTConfig, MMKTRunConfig

REPO = Path(__file__).resolve().parents[1]
TINY_GENERATOR = GeneratorConfig(hidden=16, timesteps=10, sampling_steps=3, pretrain_steps=3, batch_size=8)


def tiny_config(method: str = "fedmmkt") -> MMKTConfig:
    return MMKTConfig(
        method=method, base=str(REPO / "configs" / "uci_mfeat.yaml"),
        set=["partition.num_clients=3", "train.rounds=1", "train.local_epochs=1", "model.channels=4",
             "model.fusion_dim=16", "model.embed_dim=8"],
        generator=TINY_GENERATOR, finetune=FinetuneConfig(steps=2, batch_size=8), images_per_class=3,
        eval_images_per_class=4,
    )


@pytest.fixture(scope="module")
def federation():
    """The tiny config's federation as the FedMMKT graph builds it (prepared and partitioned by its stages)."""
    from fedmm.graph import FEDMMKT
    from fedmm.mmkt.stages import federation

    config = MMKTRunConfig(run=tiny_config())
    artifacts = FEDMMKT.run_through(config, "mmkt_federated", track=False)
    return federation(config, artifacts["mmkt_prepared"], artifacts["mmkt_federated"])
