"""What a strategy declares before torch loads: its name, its class, its parameter model, what it needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """A strategy's own parameters: the config section ``train.<section>`` (unknown keys refused, frozen)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class StrategyInfo:
    """A strategy as a config names it: declared once, read by the config (no torch) and by the class.

    ``where`` is the class as ``module.Class`` (imported on first use); ``section`` the
    ``train.<section>`` holding ``params`` (None: no parameters; strategies may share one);
    ``proxy`` whether it needs the server's labelled proxy set, or a function of its parameters.
    """

    name: str
    where: str
    section: str | None = None
    params: type[Params] | None = None
    proxy: bool | Callable[[Params], bool] = False

    def needs_proxy(self, params: Params | None = None) -> bool:
        """Whether the strategy needs the server's proxy set with ``params`` (its defaults when None)."""
        if not callable(self.proxy):
            return self.proxy
        return self.proxy(params if params is not None else self.params())
