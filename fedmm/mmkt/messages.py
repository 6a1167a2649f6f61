"""What a FedMMKT round exchanges besides FedAvg's :class:`~fedmm.fl.messages.ClientUpdate` (transport-agnostic).

- server -> client: :class:`SyntheticBatch`, the round's prompted images (in the strategy's server
  state, so it travels with the global model in-process and over Flower);
- client -> server: :class:`MMKTUpdate`, FedAvg's update plus feedback computed from the client's
  trained model on those images only (no client sample, label or count of them enters the feedback).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedmm.fl.messages import ClientUpdate


@dataclass(frozen=True)
class SyntheticBatch:
    """Server -> client: images the generator made for the server's prompt of each image's class."""

    server_round: int
    images: torch.Tensor  # (N, 256) 16x16 images in [0, 1]
    prompted: torch.Tensor  # (N,) the class each image was prompted for


def empty() -> torch.Tensor:
    return torch.zeros(0)


@dataclass(frozen=True)
class MMKTUpdate(ClientUpdate):
    """Client -> server: FedAvg's delta and example count, and the client's view of the synthetic images.

    ``logits`` are the trained model's on :attr:`SyntheticBatch.images`, in order;
    ``prototypes[c]`` is the mean fused representation of the images prompted for class ``c``,
    each weighted by the client's probability of ``c``; ``mass[c]`` is the sum of those weights
    (how class-``c``-like the client found them). A free rider sends no feedback (empty tensors).
    """

    logits: torch.Tensor = field(default_factory=empty)  # (N, K)
    prototypes: torch.Tensor = field(default_factory=empty)  # (K, F)
    mass: torch.Tensor = field(default_factory=empty)  # (K,)

    @property
    def has_feedback(self) -> bool:
        return len(self.logits) > 0
