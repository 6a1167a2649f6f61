"""fedmm's messages as Flower records: named arrays packed in an ``ArrayRecord``, scalars in a ``ConfigRecord``."""

from __future__ import annotations

import io
from dataclasses import asdict, replace

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedmm.fl.codec import arrays_state, decode, encode, state_arrays
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.site import RunSpec
from fedmm.tensors import State

RUN, INSTRUCTION, GLOBAL, SERVER, PROXY, PAYLOAD, SCALARS = (
    "run", "instruction", "global", "server", "proxy", "payload", "scalars",
)
PACKED = "npz"


def array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """The arrays as one ``Array`` holding their ``.npz`` bytes (names, dtypes and bits as they are).

    Flower stores and sends every ``Array`` of a message as objects of their own, an HTTP request
    each: a model's 20 tensors made 42 objects a record, one.
    """
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return ArrayRecord(array_dict={PACKED: Array(np.frombuffer(buffer.getvalue(), dtype=np.uint8))})


def record_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(record[PACKED].numpy().tobytes()), allow_pickle=False) as packed:
        return {name: packed[name] for name in packed.files}


def train_content(
    run: RunSpec, instruction: TrainInstruction, global_state: State, server_state: State,
    proxy: dict[str, np.ndarray] | None,
) -> RecordDict:
    """Server -> site: the run, the instruction, the global state, the strategy's server state, proxy inputs."""
    content = RecordDict({
        RUN: ConfigRecord({"spec": replace(run, held_out=[]).to_json()}),  # the held-out hashes serve the query only
        INSTRUCTION: ConfigRecord(asdict(instruction)),
        GLOBAL: array_record(state_arrays(global_state)),
        SERVER: array_record(state_arrays(server_state)),
    })
    if proxy is not None:
        content[PROXY] = array_record(proxy)
    return content


def read_train(content: RecordDict, device: str = "cpu"):
    """``(run, instruction, global state, server state, proxy arrays or None)`` of a train message."""
    proxy = record_arrays(content[PROXY]) if PROXY in content else None
    return (
        RunSpec.from_json(str(content[RUN]["spec"])),
        TrainInstruction(**dict(content[INSTRUCTION])),
        arrays_state(record_arrays(content[GLOBAL]), device=device),
        arrays_state(record_arrays(content[SERVER]), device=device),
        proxy,
    )


def payload_content(payload) -> RecordDict:
    arrays, scalars = encode(payload)
    return RecordDict({PAYLOAD: array_record(arrays), SCALARS: ConfigRecord(scalars)})


def read_payload(content: RecordDict, classes, device: str = "cpu"):
    return decode(record_arrays(content[PAYLOAD]), dict(content[SCALARS]), classes, device)
