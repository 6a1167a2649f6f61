"""Strategy messages as flat named arrays and scalars, for transports that move bytes (Flower).

A payload (any dataclass of :mod:`fedmm.fl.messages` or a strategy's own payload type) becomes
``(arrays, scalars)``: named numpy arrays and a flat mapping of ints, floats and strings,
which is what Flower's ``ArrayRecord`` and ``ConfigRecord`` hold. Every field's kind is
recorded under ``<field>:kind`` so :func:`decode` rebuilds the same class with tensors, states
(name -> tensor), :class:`~fedmm.moments.Moments` tuples, metric mappings and scalars
restored bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import torch

from fedmm.moments import Moments

Scalar = int | float | str | bool
KIND = ":kind"
PAYLOAD_CLASS = "payload:class"


def state_arrays(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, np.ndarray]:
    """A state's tensors as host arrays, keys prefixed."""
    return {prefix + name: value.detach().cpu().numpy() for name, value in state.items()}


def arrays_state(arrays: dict[str, np.ndarray], prefix: str = "", device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of the keys under ``prefix``, prefix removed (in their stored order)."""
    return {
        name.removeprefix(prefix): torch.as_tensor(value, device=device)
        for name, value in arrays.items() if name.startswith(prefix)
    }


def encode(payload) -> tuple[dict[str, np.ndarray], dict[str, Scalar]]:
    """``(arrays, scalars)`` of a payload dataclass; its class name goes under :data:`PAYLOAD_CLASS`."""
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Scalar] = {PAYLOAD_CLASS: type(payload).__name__}
    for item in dataclasses.fields(payload):
        name, value = item.name, getattr(payload, item.name)
        if isinstance(value, torch.Tensor):
            kind = "tensor"
            arrays[name] = value.detach().cpu().numpy()
        elif isinstance(value, dict) and name == "metrics":
            kind = "metrics"
            scalars.update({f"{name}/{key}": float(number) for key, number in value.items()})
        elif isinstance(value, dict):
            kind = "state"
            arrays.update(state_arrays(value, f"{name}/"))
        elif isinstance(value, tuple) and all(isinstance(m, Moments) for m in value):
            kind = f"moments/{len(value)}"
            for i, moments in enumerate(value):
                arrays.update({f"{name}/{i}/{f.name}": getattr(moments, f.name) for f in dataclasses.fields(Moments)})
        elif isinstance(value, (bool, int, float, str)):
            kind = "scalar"
            scalars[name] = value
        else:
            raise TypeError(f"{type(payload).__name__}.{name}: cannot encode a {type(value).__name__}")
        scalars[name + KIND] = kind
    return arrays, scalars


def decode(
    arrays: dict[str, np.ndarray], scalars: dict[str, Scalar], classes: Iterable[type], device: str = "cpu"
):
    """The payload :func:`encode` wrote, as one of ``classes`` (matched by name), tensors on ``device``."""
    by_name = {cls.__name__: cls for cls in classes}
    name = scalars.get(PAYLOAD_CLASS)
    if name not in by_name:
        raise ValueError(f"unexpected payload class {name!r}; this strategy takes {sorted(by_name)}")
    cls = by_name[name]
    values = {}
    for item in dataclasses.fields(cls):
        field, kind = item.name, scalars.get(item.name + KIND)
        if kind is None:
            continue
        if kind == "tensor":
            values[field] = torch.as_tensor(arrays[field], device=device)
        elif kind == "metrics":
            values[field] = {k.removeprefix(field + "/"): float(v) for k, v in scalars.items()
                             if k.startswith(field + "/")}
        elif kind == "state":
            values[field] = arrays_state(arrays, field + "/", device)
        elif kind.startswith("moments/"):
            count = int(kind.split("/")[1])
            values[field] = tuple(
                Moments(**{f.name: arrays[f"{field}/{i}/{f.name}"] for f in dataclasses.fields(Moments)})
                for i in range(count)
            )
        else:
            values[field] = scalars[field]
    return cls(**values)
