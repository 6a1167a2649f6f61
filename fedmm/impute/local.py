"""scikit-learn baselines fitted client-locally on flattened, standardised inputs.

Each client fits its own imputer on its own samples (absent modalities as NaN) and nothing
is aggregated: a kNN imputer *is* its client's data, so it could not leave the client
anyway. At imputation a sample is filled by the imputer of the client it lives on
(``owners``), as it would be in deployment.

``KNNImputer`` works on the full flattened signals. ``IterativeImputer`` regresses every
feature on all others each iteration, which is intractable on hundreds of time steps, so it
works on a client-local PCA basis per modality (``components`` coefficients each) and
decodes the imputed coefficients back to signals. A modality a client never saw is filled
with zeros in standardised space (the model's normalisation mean).
"""

from __future__ import annotations

import logging
import warnings
from abc import abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer

from fedmm.impute.base import ImputationError, Imputer, from_standardized, standardized_blocks
from fedmm.impute_config import IterativeConfig, KnnConfig
from fedmm.models.multimodal import MultimodalNet
from fedmm.seeding import rng_for
from fedmm.tensors import TensorData

logger = logging.getLogger(__name__)


def _with_nan(blocks: list[np.ndarray], present: np.ndarray) -> list[np.ndarray]:
    return [np.where(present[:, [m]], block, np.nan) for m, block in enumerate(blocks)]


class ClientLocal(Imputer):
    """One fitted imputer per client over standardised blocks; a sample is imputed by its owner's."""

    space = "input"

    def _fit(self, clients: list[TensorData], model: MultimodalNet, seed: int) -> None:
        self.model = model
        self.locals = [
            self._fit_client(standardized_blocks(model, c.inputs), c.mask.cpu().numpy(), seed, k) if len(c) else None
            for k, c in enumerate(clients)
        ]

    def _impute(self, values: dict[str, torch.Tensor], mask: torch.Tensor, owners: np.ndarray | None) -> dict:
        if owners is None:
            raise ImputationError(f"the {self.name} imputer is client-local: say which client owns each sample")
        blocks = standardized_blocks(self.model, values)
        present = mask.cpu().numpy()
        filled = [block.copy() for block in blocks]
        incomplete = ~present.all(axis=1)
        for k in np.unique(owners[incomplete]):
            if k >= len(self.locals) or self.locals[k] is None:
                raise ImputationError(f"client {k} has no {self.name} imputer (no data)")
            rows = np.flatnonzero((owners == k) & incomplete)
            local = self._transform(self.locals[k], _with_nan([b[rows] for b in blocks], present[rows]))
            for m, block in enumerate(local):
                filled[m][rows] = block
        return from_standardized(self.model, filled, values)

    @abstractmethod
    def _fit_client(self, blocks: list[np.ndarray], present: np.ndarray, seed: int, client: int):
        """One client's fitted imputer from its standardised blocks and presence (n, M)."""

    @abstractmethod
    def _transform(self, local, blocks: list[np.ndarray]) -> list[np.ndarray]:
        """Blocks with NaN where absent -> blocks imputed by one client's imputer."""


class ClientKnn(ClientLocal):
    """``KNNImputer`` (nan-Euclidean distance over the features both samples have)."""

    name = "knn"

    def __init__(self, config: KnnConfig) -> None:
        super().__init__()
        self.config = config

    def _fit_client(self, blocks: list[np.ndarray], present: np.ndarray, seed: int, client: int) -> KNNImputer:
        imputer = KNNImputer(n_neighbors=self.config.n_neighbors, keep_empty_features=True)
        return imputer.fit(np.concatenate(_with_nan(blocks, present), axis=1))

    def _transform(self, local: KNNImputer, blocks: list[np.ndarray]) -> list[np.ndarray]:
        widths = np.cumsum([block.shape[1] for block in blocks])[:-1]
        return np.split(local.transform(np.concatenate(blocks, axis=1)), widths, axis=1)


@dataclass
class _IterativeClient:
    """A client's PCA basis per modality (None: never saw it) and its imputer over the coefficients."""

    bases: list[PCA | None]
    imputer: IterativeImputer | None


class ClientIterative(ClientLocal):
    """``IterativeImputer`` (BayesianRidge, round robin) over client-local PCA coefficients."""

    name = "iterative"

    def __init__(self, config: IterativeConfig) -> None:
        super().__init__()
        self.config = config

    def _coefficients(self, local: _IterativeClient, blocks: list[np.ndarray]) -> np.ndarray:
        parts = []
        for basis, block in zip(local.bases, blocks):
            if basis is None:
                continue
            rows = ~np.isnan(block).any(axis=1)
            coefficients = np.full((len(block), basis.n_components_), np.nan)
            if rows.any():
                coefficients[rows] = basis.transform(block[rows])
            parts.append(coefficients)
        return np.concatenate(parts, axis=1)

    def _fit_client(self, blocks: list[np.ndarray], present: np.ndarray, seed: int, client: int) -> _IterativeClient:
        bases = []
        for m, block in enumerate(blocks):
            rows = block[present[:, m]]
            size = min(self.config.components, len(rows) - 1, block.shape[1])
            bases.append(PCA(size, svd_solver="full").fit(rows) if size >= 1 else None)
        local = _IterativeClient(bases, None)
        if all(basis is None for basis in bases):
            return local
        coefficients = self._coefficients(local, _with_nan(blocks, present))
        local.imputer = IterativeImputer(
            max_iter=self.config.max_iter,
            min_value=np.nan_to_num(np.nanmin(coefficients, axis=0)),
            max_value=np.nan_to_num(np.nanmax(coefficients, axis=0)),
            keep_empty_features=True,
            random_state=int(rng_for(seed, "impute", "iterative", client).integers(2**31)),
        )
        with warnings.catch_warnings():  # reported below, once per client, through the module logger
            warnings.filterwarnings("ignore", message=r"\[IterativeImputer\] Early stopping", category=ConvergenceWarning)
            local.imputer.fit(coefficients)
        if local.imputer.n_iter_ >= self.config.max_iter:
            logger.info("client %d: IterativeImputer ran all impute.iterative.max_iter=%d rounds without meeting its "
                        "tolerance", client, self.config.max_iter)
        return local

    def _transform(self, local: _IterativeClient, blocks: list[np.ndarray]) -> list[np.ndarray]:
        if local.imputer is None:
            return [np.nan_to_num(block) for block in blocks]
        coefficients = local.imputer.transform(self._coefficients(local, blocks))
        out, start = [], 0
        for basis, block in zip(local.bases, blocks):
            if basis is None:
                out.append(np.zeros_like(block))
                continue
            part = coefficients[:, start:start + basis.n_components_]
            start += basis.n_components_
            out.append(basis.inverse_transform(part))
        return out
