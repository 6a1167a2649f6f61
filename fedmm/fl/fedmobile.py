"""FedMobile (Liu, Wang and Yuan 2025): generated latent features for missing modalities.

Also contribution-aware aggregation of the global model and of the generators.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from fedmm.config import TrainConfig
from fedmm.fl.client import Worker, train_client
from fedmm.fl.messages import ClientUpdate, Forward, LocalLoss, TrainInstruction, labelled_cross_entropy
from fedmm.fl.params.fedmobile import FEDMOBILE
from fedmm.fl.strategy import FedAvg, ServerContext
from fedmm.impute.generator import CrossModalGenerator, GeneratedFeaturesNet, train_generator_locally
from fedmm.impute.latent import LatentData, Scaler, client_latents, prefixed, scaler_from, unprefixed
from fedmm.impute_config import GeneratorConfig
from fedmm.models.multimodal import ModelSpec, MultimodalNet, build_model
from fedmm.moments import Moments
from fedmm.tensors import State, TensorData, fedavg_states, frozen, seeded_module

GENERATOR = "generator."
GENERATOR_SCALER = "generator_scaler."
SCALER = "scaler."


@dataclass(frozen=True)
class FedMobileUpdate(ClientUpdate):
    """A :class:`ClientUpdate` plus the client's generator, its embedding moments and its local losses."""

    generator: State = field(default_factory=dict)
    generator_examples: int = 0
    moments: tuple[Moments, ...] = ()
    loss_before: float = 0.0
    loss_after: float = 0.0
    local_accuracy: float = 0.0


def contribution_weights(updates: list[FedMobileUpdate], performance_weight: float) -> np.ndarray:
    """Aggregation weights ``n_k * (w * accuracy_k + (1 - w) * relative loss reduction_k)``, normalised.

    The relative loss reduction (the paper's estimate of a client's improvement to the global
    model) is clipped at 0; if every score is 0 the weights fall back to example counts.
    """
    examples = np.array([u.num_examples for u in updates], dtype=float)
    accuracy = np.array([u.local_accuracy for u in updates])
    before = np.array([u.loss_before for u in updates])
    gain = np.maximum(before - np.array([u.loss_after for u in updates]), 0) / np.maximum(before, 1e-12)
    scores = examples * (performance_weight * accuracy + (1 - performance_weight) * gain)
    return scores / scores.sum() if scores.sum() > 0 else examples / examples.sum()


class FedMobile(FedAvg[FedMobileUpdate]):
    """FedMobile: missing modalities' features come from a federated cross-modal generator.

    Server state: the global generator (:class:`~fedmm.impute.generator.CrossModalGenerator`,
    the same module as the ``generator`` imputer) with the embedding scaler it was trained
    under, and the scaler for the next round's generators (from the clients' embedding moments).

    Client contract, each round:

    1. train the global model on local data with cross-entropy, where every modality missing
       from a sample gets the global generator's features (flagged present) instead of zeros
       (from the round after the first generator is aggregated; before that, zeros);
    2. train a copy of the global generator on its own trained encoders' embeddings (masked
       supervision: feature regression plus logit distillation, :func:`train_generator_locally`),
       once the server has a scaler (from round 1);
    3. send a :class:`FedMobileUpdate`: parameter delta, generator weights and usable-sample
       count, per-modality embedding moments (counts and sums, no values), local loss on its
       data before and after training, and local accuracy after training.

    The server adds the deltas with :func:`contribution_weights` (``train.fedmobile.model_weighting:
    contribution``; ``samples``: FedAvg's example counts, the ablation) and aggregates the generators
    with clustered Shapley weights (``train.fedmobile.generator_weighting: clustered_shapley``:
    clients clustered by their generators' outputs on the proxy set, exact Shapley over
    clusters of the utility "negative masked reconstruction error on the proxy set", negatives
    clipped) or by usable-sample counts (``samples``).

    Parameters (config: ``train.fedmobile``): ``performance_weight`` (``w`` in [0, 1] of
    :func:`contribution_weights`), ``model_weighting`` and ``generator_weighting`` (above),
    ``clusters`` (>= 1, K-means clusters of the clustered Shapley) and ``generator`` (the
    generator's width and local training). Only clustered-Shapley generator weights need
    the server's proxy set, so ``needs_proxy`` follows ``generator_weighting``.

    A free rider sends a zero delta and nothing else: no generator, moments, accuracy or
    loss reduction, so it gets no contribution weight.
    """

    info = FEDMOBILE

    def __init__(
        self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, performance_weight: float,
        model_weighting: str, generator_weighting: str, clusters: int, generator: GeneratorConfig,
    ) -> None:
        self.config = self.checked(
            performance_weight=performance_weight, model_weighting=model_weighting,
            generator_weighting=generator_weighting, clusters=clusters, generator=generator,
        )
        self.needs_proxy = self.info.needs_proxy(self.config)
        super().__init__(train, seed, server)
        self.server_model = None
        if server is not None and self.needs_proxy:
            self.server_model = build_model(server.spec, seed).to(server.device)
        self.generator: CrossModalGenerator | None = None
        self.generator_scaler: Scaler | None = None
        self.scaler: Scaler | None = None

    def _new_generator(self, spec: ModelSpec, device: str) -> CrossModalGenerator:
        return seeded_module(
            lambda: CrossModalGenerator(len(spec.modalities), spec.embed_dim, self.config.generator.hidden),
            self.seed, "fedmobile", "generator", "init",
        ).to(device)

    def server_state(self) -> State:
        state: State = {}
        for prefix, module in ((GENERATOR, self.generator), (GENERATOR_SCALER, self.generator_scaler),
                               (SCALER, self.scaler)):
            if module is not None:
                state.update(prefixed(prefix, module.state_dict()))
        return state

    def load_server_state(self, state: State) -> None:
        if any(k.startswith(SCALER) for k in state):
            self.scaler = scaler_from(unprefixed(SCALER, state))
        if any(k.startswith(GENERATOR) for k in state):
            generator = CrossModalGenerator.from_state(unprefixed(GENERATOR, state), self.server.spec)
            self.generator = generator.to(self.server.device)
            self.generator_scaler = scaler_from(unprefixed(GENERATOR_SCALER, state))

    def predictor(self, model: MultimodalNet) -> torch.nn.Module:
        """The global model as it predicts: generated features for missing modalities once a generator exists."""
        if self.generator is None:
            return model
        return GeneratedFeaturesNet(model, self.generator, self.generator_scaler)

    @classmethod
    def predictor_from(cls, model: MultimodalNet, server_state: State) -> torch.nn.Module:
        generator_state = unprefixed(GENERATOR, server_state)
        if not generator_state:
            return model
        generator = CrossModalGenerator.from_state(generator_state, model.spec)
        return GeneratedFeaturesNet(model, generator, scaler_from(unprefixed(GENERATOR_SCALER, server_state))).eval()

    def local_objective(self, model: torch.nn.Module, global_state: State, kept: State | None) -> LocalLoss:
        if self.generator is None:
            return super().local_objective(model, global_state, kept)
        generator = copy.deepcopy(self.generator).requires_grad_(False)
        completed = GeneratedFeaturesNet(model, generator, self.generator_scaler)

        def loss(out: Forward) -> torch.Tensor:
            embeddings, mask = completed.complete(out.embeddings, out.batch.mask)
            return labelled_cross_entropy(model.head(model.fuse(embeddings, mask)), out.batch.labels)

        return loss

    @torch.no_grad()
    def _local_score(self, model: MultimodalNet, data: TensorData) -> tuple[float, float]:
        """Cross-entropy and accuracy of the (generator-completed) model on a client's labelled samples."""
        predictor = self.predictor(model).eval()
        labelled = data.take(torch.nonzero(data.labelled).flatten())
        if not len(labelled):
            return 0.0, 0.0
        logits = torch.cat([predictor(b.inputs, b.mask) for b in labelled.batches(1024)])
        loss = torch.nn.functional.cross_entropy(logits, labelled.labels)
        return float(loss), float((logits.argmax(1) == labelled.labels).float().mean())

    def fit(
        self, worker: Worker, global_state: State, data: TensorData, instruction: TrainInstruction, kept: State | None
    ) -> tuple[FedMobileUpdate, None]:
        worker.load(global_state)
        model = worker.model
        loss_before, _ = self._local_score(model, data)
        update, _ = train_client(
            worker, global_state, data, instruction, self.local_objective(model, global_state, kept), self.keep,
            self.seed,
        )
        loss_after, accuracy = self._local_score(model, data)
        latents = client_latents(model.eval(), [data])[0]
        moments = tuple(latents.moments())
        generator, usable = {}, int(latents.usable.sum())
        if self.scaler is not None and usable:
            start = self.generator
            if start is None:
                start = self._new_generator(model.spec, self.scaler.mean.device)
            local = copy.deepcopy(start).train()
            with frozen(model):
                train_generator_locally(
                    local, self.scaler, model, latents, self.config.generator, self.seed,
                    ("fedmobile", instruction.server_round, instruction.client_id),
                )
            generator = {k: v.detach().clone() for k, v in local.state_dict().items()}
        return FedMobileUpdate(
            update.client_id, update.num_examples, update.delta, update.metrics,
            generator=generator, generator_examples=usable if generator else 0, moments=moments,
            loss_before=loss_before, loss_after=loss_after, local_accuracy=accuracy,
        ), None

    def free_rider_payload(
        self, instruction: TrainInstruction, global_state: State, num_examples: int
    ) -> FedMobileUpdate:
        update = super().free_rider_payload(instruction, global_state, num_examples)
        return FedMobileUpdate(update.client_id, update.num_examples, update.delta)

    def model_weights(self, updates: list[FedMobileUpdate]) -> np.ndarray:
        """The weights of the clients' model deltas: contribution-aware, or (the ablation) example counts."""
        if self.config.model_weighting == "contribution":
            return contribution_weights(updates, self.config.performance_weight)
        examples = np.array([u.num_examples for u in updates], dtype=float)
        return examples / examples.sum()

    def aggregate_train(self, server_round: int, global_state: State, updates: list[FedMobileUpdate]) -> State:
        if not updates:
            raise ValueError(f"round {server_round}: no client updates to aggregate")
        weights = self.model_weights(updates)
        mean_delta = fedavg_states([u.delta for u in updates], weights)
        merged = {name: global_state[name] + mean_delta[name] for name in global_state}
        trained = [u for u in updates if u.generator]
        if trained:
            generator_weights = self._generator_weights(server_round, merged, trained)
            if self.generator is None:
                self.generator = self._new_generator(self.server.spec, self.server.device)
            self.generator.load_state_dict(fedavg_states([u.generator for u in trained], list(generator_weights)))
            self.generator.eval()
            self.generator_scaler = copy.deepcopy(self.scaler)
        device = self.server.device if self.server is not None else "cpu"
        self.scaler = Scaler.from_moments([u.moments for u in updates if u.moments]).to(device)
        return merged

    def _generator_weights(self, server_round: int, merged: State, trained: list[FedMobileUpdate]) -> np.ndarray:
        examples = np.array([u.generator_examples for u in trained], dtype=float)
        if self.config.generator_weighting == "samples" or len(trained) == 1:
            return examples / examples.sum()
        self.server_model.load_state_dict(merged)
        proxy = client_latents(self.server_model.eval(), [self.server.proxy])[0]
        scratch = self._new_generator(self.server.spec, self.server.device)
        utility = GeneratorUtility(scratch, trained, self.scaler, proxy, self.generator)
        from fedmm.audit.clustered import aggregation_weights, clustered_shapley  # a site that never weights skips the audit

        values, _ = clustered_shapley(
            utility, utility.outputs(), min(self.config.clusters, len(trained)), seed=self.seed + server_round
        )
        return aggregation_weights(values.values)


class GeneratorUtility:
    """Utility of a coalition of client generators: negative masked reconstruction error on the proxy set.

    A coalition's generator is the usable-sample-weighted mean of its members'; each proxy
    sample hides each modality in turn and the generator predicts it from the rest (mean
    squared error in the scaled space). The empty coalition is the previous global generator
    (or predicting the scaled mean, 0, before one exists).
    """

    def __init__(
        self, scratch: CrossModalGenerator, trained: list[FedMobileUpdate], scaler: Scaler, proxy: LatentData,
        previous: CrossModalGenerator | None,
    ) -> None:
        self.scratch, self.trained, self.previous = scratch.eval(), trained, previous
        self.scaled = scaler(proxy.embeddings, proxy.present)
        modalities = self.scaled.shape[1]
        self.hidden = torch.eye(modalities, dtype=torch.bool, device=self.scaled.device)

    @torch.no_grad()
    def _error(self, generator: CrossModalGenerator | None) -> float:
        errors = []
        for hidden in self.hidden:
            if generator is None:
                predicted = torch.zeros_like(self.scaled)
            else:
                visible = (~hidden).expand(len(self.scaled), -1)
                predicted = generator(self.scaled, visible)
            errors.append(((predicted[:, hidden] - self.scaled[:, hidden]) ** 2).mean())
        return float(torch.stack(errors).mean())

    @torch.no_grad()
    def outputs(self) -> np.ndarray:
        """Each client generator's generated features on the proxy set (each modality hidden in turn), flattened.

        These are the clustering features.
        """
        rows = []
        for update in self.trained:
            self.scratch.load_state_dict(update.generator)
            generated = [
                self.scratch(self.scaled, (~hidden).expand(len(self.scaled), -1))[:, hidden] for hidden in self.hidden
            ]
            rows.append(torch.cat(generated, dim=1).flatten().cpu().numpy())
        return np.stack(rows)

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        values = []
        for row in np.asarray(coalitions, dtype=bool):
            if not row.any():
                values.append(-self._error(self.previous))
                continue
            members = [u for u, inside in zip(self.trained, row) if inside]
            self.scratch.load_state_dict(fedavg_states([u.generator for u in members],
                                                       [u.generator_examples for u in members]))
            values.append(-self._error(self.scratch))
        return np.array(values)
