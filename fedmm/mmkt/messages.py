"""What a FedMMKT round exchanges besides FedAvg's :class:`~fedmm.fl.messages.ClientUpdate` (transport-agnostic).

- server -> client: :class:`SyntheticBatch`, the round's prompted images;
- client -> server: :class:`ClientFeedback`, computed from the client's trained model on
  those images only (no client sample, label or count of them enters it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SyntheticBatch:
    """Server -> client: images the generator made for the server's prompt of each image's class."""

    server_round: int
    images: torch.Tensor  # (N, 256) 16x16 images in [0, 1]
    prompted: torch.Tensor  # (N,) the class each image was prompted for


@dataclass(frozen=True)
class ClientFeedback:
    """Client -> server: the client's view of the synthetic images, nothing else.

    ``prototypes[c]`` is the mean fused representation of the images prompted for class
    ``c``, each weighted by the client's probability of ``c``; ``mass[c]`` is the sum of those
    weights (how class-``c``-like the client found them).
    """

    client_id: int
    logits: torch.Tensor  # (N, K) on SyntheticBatch.images, in order
    prototypes: torch.Tensor  # (K, F)
    mass: torch.Tensor  # (K,)
