"""Stop a training that diverged: non-finite global weights or client losses end the run at the round they appear."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fedmm.errors import UserError
from fedmm.tensors import State


class DivergedError(UserError, ArithmeticError):
    """The training diverged (a weight or a client's loss is not finite): nothing of it can be registered."""


def check_finite(round_number: int, state: State, updates: Sequence = ()) -> None:
    """Raise :class:`DivergedError` naming the round when the aggregated ``state`` or a reply's loss is not finite."""
    tensors = [name for name, value in state.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    clients = sorted(u.client_id for u in updates if not math.isfinite(float(getattr(u, "metrics", {}).get("loss", 0.0))))
    if not tensors and not clients:
        return
    found = []
    if tensors:
        found.append(f"{len(tensors)} of {len(state)} weight tensors of the global model are not finite ({tensors[0]}, ...)")
    if clients:
        found.append(f"clients {clients} reported a non-finite loss")
    raise DivergedError(f"training diverged in round {round_number}: {'; '.join(found)}; lower train.lr or check the "
                        "data for extreme values (nothing was registered)")
