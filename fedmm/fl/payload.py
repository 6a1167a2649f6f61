"""What a client sends: its strategy's payload, or what a corrupted client would really send instead.

Shared by the in-process round engine and a deployed site (:mod:`fedmm.fl.site`), so a site
imports neither the server engine nor the audit.
"""

from __future__ import annotations

from dataclasses import replace

from fedmm.data.corruption import CorruptionPlan
from fedmm.fl.client import Worker
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.strategy import Strategy, StrategyError
from fedmm.tensors import State, TensorData


def client_payload(
    worker: Worker,
    state: State,
    data: TensorData,
    instruction: TrainInstruction,
    strategy: Strategy,
    corruption: CorruptionPlan | None,
    kept: State | None = None,
):
    """One client's payload and kept state; a corrupted client sends what it really would.

    Free riders skip training and send the strategy's :meth:`~Strategy.free_rider_payload`.
    Update corruptions tamper with parameter deltas, so they apply to :class:`ClientUpdate`
    payloads (and payloads extending it) only.
    """
    client = instruction.client_id
    tampers = corruption is not None and corruption.tampers_update(client)
    if tampers and not strategy.sends_deltas():
        raise StrategyError(
            f"corruption of client {client}'s update needs a parameter-delta payload; "
            f"strategy {strategy.name!r} sends {strategy.payload_type.__name__}"
        )
    if tampers and corruption.free_rides(client):
        update = strategy.free_rider_payload(instruction, state, len(data))
    else:
        update, kept = strategy.fit(worker, state, data, instruction, kept)
    if not tampers:
        return update, kept
    return replace(update, delta=corruption.corrupt_update(client, instruction.server_round, update.delta)), kept
