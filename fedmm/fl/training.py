"""The training stage: federated rounds plus the centralized reference, resumable."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

from fedmm.artifacts import write_json
from fedmm.config import Config, MaskConfig
from fedmm.data.federated import FederatedData, client_arrays, held_out_presence, masked_arrays, proxy_arrays, split_tensors
from fedmm.data.prepare import PreparedData
from fedmm.fl.engine import UPDATES_DIR, run_federated
from fedmm.fl.federation import run_over_flower
from fedmm.fl.history import RoundRecord
from fedmm.fl.reference import CentralizedReference, reference_beside
from fedmm.fl.result import TrainResult
from fedmm.fl.strategies import make_strategy
from fedmm.fl.strategy import ServerContext
from fedmm.fl.vectorised import client_pool
from fedmm.models.multimodal import ModelSpec
from fedmm.runtime import resolve_device, state_dir
from fedmm.tensors import TensorData, intra_op_threads


def evaluation_sets(
    prepared: PreparedData, device: str, federated: FederatedData | None = None
) -> dict[str, TensorData]:
    """Validation and test sets present in the prepared data, keyed by split name.

    Splits keep the data's own missingness. When the partition's mask removes modalities,
    ``test_missing`` is the test split under that mask as well (:func:`held_out_presence`, with
    the partition's seed; samples left with no modality dropped).
    """
    sets = {
        name: split_tensors(prepared, name, device)
        for name in ("val", "test", "test_subjects")
        if len(prepared.indices(name))
    }
    mask = federated.mask if federated is not None else MaskConfig()
    if mask != MaskConfig():
        index = prepared.indices("test")
        presence = held_out_presence(mask, list(prepared.dataset.modalities), len(index), federated.report.seed)
        presence &= prepared.dataset.presence[index]
        keep = presence.any(axis=1)
        index, presence = index[keep], presence[keep]
        sets["test_missing"] = TensorData.from_numpy(
            masked_arrays(prepared, index, presence), presence, prepared.dataset.labels[index], device
        )
    return sets


def model_spec(config: Config, prepared: PreparedData) -> ModelSpec:
    dataset = prepared.dataset
    return ModelSpec.build(dataset.sample_shapes(), dataset.num_classes, config.model, prepared.stats)


def training_fingerprint(config: Config, prepared: PreparedData, federated: FederatedData) -> str:
    """What determines the training outcome: data, partition, model and training settings."""
    parts = [prepared.data_sha256, federated.content_hash, config.hash("model", "train", "seed")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def train(
    config: Config,
    prepared: PreparedData,
    federated: FederatedData,
    on_round: Callable[[RoundRecord], None] | None = None,
    workdir: Path | None = None,
) -> TrainResult:
    """Train the federation (resuming from its last checkpoint) and the centralized reference.

    On a CPU, with one torch intra-op thread (see :func:`fedmm.tensors.intra_op_threads`)."""
    device = resolve_device(config.train.device)
    with intra_op_threads(1 if device == "cpu" else torch.get_num_threads()):
        return _train_on(device, config, prepared, federated, on_round, workdir)


def _train_on(
    device: str, config: Config, prepared: PreparedData, federated: FederatedData,
    on_round: Callable[[RoundRecord], None] | None, workdir: Path | None,
) -> TrainResult:
    spec = model_spec(config, prepared)
    fingerprint = training_fingerprint(config, prepared, federated)
    workdir = Path(workdir or state_dir() / "checkpoints" / fingerprint[:16])
    write_json(workdir / "fingerprint.json", {"fingerprint": fingerprint, "config": config.model_dump(mode="json")})
    clients = [
        TensorData.from_numpy(*client_arrays(prepared, federated, k), device=device)
        for k in range(federated.num_clients)
    ]
    evaluation = evaluation_sets(prepared, device, federated)
    proxy = TensorData.from_numpy(*proxy_arrays(prepared, federated), device=device)
    beside = (reference_beside(CentralizedReference(config, prepared, federated, spec, clients, evaluation, device))
              if config.train.centralized else nullcontext())
    with beside as central_reference:
        if config.train.transport == "flower":
            outcome = run_over_flower(config, prepared, federated, spec, fingerprint, evaluation, proxy, workdir, on_round)
        else:
            strategy = make_strategy(config.train, config.seed, ServerContext(spec, device, proxy))
            pool = client_pool(config.train.engine, spec, clients, config.seed, device, workdir, federated.corruption)
            outcome = run_federated(
                spec, pool, evaluation, strategy, config.train.rounds, config.seed, workdir, device, on_round,
                config.train.eval_every,
            )
        central_state, central_history = central_reference() if central_reference else (None, None)
    return TrainResult(
        spec=spec,
        state={k: v.cpu() for k, v in outcome.model.state_dict().items()},
        history=outcome.history,
        strategy=config.train.strategy,
        fingerprint=fingerprint,
        updates_dir=workdir / UPDATES_DIR,
        centralized_state=central_state,
        centralized_history=central_history,
        server_state={k: v.cpu() for k, v in outcome.server_state.items()},
    )
