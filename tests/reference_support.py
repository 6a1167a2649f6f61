"""The centralized reference's test helpers, importable by a test's own child process.

A child importing the test module would import ``conftest``, which makes a fresh state folder of
its own (and leaves it: the child is killed); this module imports no ``conftest``.
"""

import multiprocessing

from fedmm.config import Config, config_from_dict
from fedmm.data.federated import client_arrays, partition_and_mask
from fedmm.data.prepare import prepare
from fedmm.fl.reference import CentralizedReference
from fedmm.fl.training import evaluation_sets, model_spec
from fedmm.tensors import TensorData

CONFIG = config_from_dict({
    "data": {"window": 50, "stride": 50},
    "partition": {"scheme": "iid", "num_clients": 3},
    "model": {"embed_dim": 8, "channels": 4, "fusion_dim": 8},
    "train": {"rounds": 2, "batch_size": 64},
})


def reference_of(config: Config = CONFIG) -> CentralizedReference:
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    clients = [TensorData.from_numpy(*client_arrays(prepared, federated, k)) for k in range(federated.num_clients)]
    return CentralizedReference(config, prepared, federated, model_spec(config, prepared), clients,
                                evaluation_sets(prepared, "cpu", federated), "cpu")


def children_named(name: str) -> list[multiprocessing.Process]:
    return [child for child in multiprocessing.active_children() if child.name == name]
