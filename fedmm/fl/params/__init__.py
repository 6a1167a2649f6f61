"""Every strategy a config can name (``train.strategy``), declared once without torch.

Each strategy's light module here holds its parameter model and its :class:`StrategyInfo`;
the config assembles ``train.*`` from :data:`DECLARED` (bad values fail before torch loads),
the strategy class takes its name, section and ``needs_proxy`` from the same declaration, and
:mod:`fedmm.fl.strategies` imports the class it names. A new strategy is a module here and a
line in :data:`DECLARED`.
"""

from __future__ import annotations

from fedmm.fl.params.base import Params, StrategyInfo
from fedmm.fl.params.baselines import FEDAVG_DROPOUT, FEDAVG_FT, PROXY_ONLY
from fedmm.fl.params.fedadam import FEDADAM
from fedmm.fl.params.fedmekt import FEDMEKT
from fedmm.fl.params.fedmmkt import FEDMMKT
from fedmm.fl.params.fedmobile import FEDMOBILE
from fedmm.fl.params.fedprox import FEDPROX
from fedmm.fl.params.mmfed3 import MMFED3
from fedmm.fl.params.moon import MOON

FEDAVG = StrategyInfo("fedavg", "fedmm.fl.strategy.FedAvg")

DECLARED: dict[str, StrategyInfo] = {
    info.name: info
    for info in (FEDAVG, FEDPROX, MOON, FEDMEKT, FEDMOBILE, MMFED3, FEDADAM, FEDAVG_DROPOUT, FEDAVG_FT, PROXY_ONLY,
                 FEDMMKT)
}
"""Each strategy's declaration by name, in the order ``train.strategy`` lists them."""


def sections() -> dict[str, type[Params]]:
    """The ``train.<section>`` parameter models, in declaration order (a shared section once)."""
    found: dict[str, type[Params]] = {}
    for info in DECLARED.values():
        if info.section is not None and found.setdefault(info.section, info.params) is not info.params:
            raise TypeError(f"train.{info.section} is declared with two parameter models")
    return found


__all__ = ["DECLARED", "Params", "StrategyInfo", "sections"]
