"""The imputers by name, built from the ``impute`` config section."""

from __future__ import annotations

from collections.abc import Callable

from fedmm.impute.base import ImputationError, Imputer
from fedmm.impute.diffusion import DiffusionImputer
from fedmm.impute.generator import GeneratorImputer
from fedmm.impute.local import ClientIterative, ClientKnn
from fedmm.impute.simple import MeanFill, ZeroFill
from fedmm.impute_config import ImputeConfig

IMPUTERS: dict[str, Callable[[ImputeConfig], Imputer]] = {
    ZeroFill.name: lambda config: ZeroFill(),
    MeanFill.name: lambda config: MeanFill(),
    ClientKnn.name: lambda config: ClientKnn(config.knn),
    ClientIterative.name: lambda config: ClientIterative(config.iterative),
    GeneratorImputer.name: lambda config: GeneratorImputer(config.generator),
    DiffusionImputer.name: lambda config: DiffusionImputer(config.diffusion),
}


def make_imputer(name: str, config: ImputeConfig) -> Imputer:
    """An unfitted imputer by name."""
    if name not in IMPUTERS:
        raise ImputationError(f"unknown imputer {name!r}; choose from {sorted(IMPUTERS)}")
    return IMPUTERS[name](config)

