"""A masked multimodal entity encoder with ComplEx or RotatE scoring, 1-N over candidate entities.

An entity's embedding is its structure embedding plus a linear projection of each of its
present modalities (text, numeric literals), initialised at zero so training starts from the
structure-only model; a missing modality adds nothing (zero-fill) or,
with HidE, an imputed embedding in the same projected space. Relations come in pairs, r and
its reciprocal r + R, so tails and heads are both predicted as "tails".
"""

from __future__ import annotations

import torch
from torch import nn


class EntityEncoder(nn.Module):
    """(entities, modalities, width) modality embeddings, summed over the present (or imputed) ones."""

    def __init__(self, num_entities: int, width: int, feature_dims: dict[str, int]) -> None:
        super().__init__()
        self.structure = nn.Embedding(num_entities, width)
        nn.init.normal_(self.structure.weight, std=0.1)
        self.project = nn.ModuleDict({name: nn.Linear(dim, width) for name, dim in feature_dims.items()})
        for layer in self.project.values():
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def modalities(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Structure first, then each feature modality in ``project`` order; zero where absent."""
        parts = [self.structure.weight] + [layer(features[name]) for name, layer in self.project.items()]
        return torch.stack(parts, dim=1) * present.unsqueeze(-1)

    def forward(
        self, features: dict[str, torch.Tensor], present: torch.Tensor, filled: torch.Tensor | None = None
    ) -> torch.Tensor:
        embeddings = self.modalities(features, present)
        if filled is not None:
            embeddings = torch.where(present.unsqueeze(-1), embeddings, filled)
        return embeddings.sum(1)


def modulus(x: torch.Tensor) -> torch.Tensor:
    """|z| of complex vectors stored as [real, imaginary] halves."""
    re, im = x.chunk(2, dim=-1)
    return (re ** 2 + im ** 2 + 1e-9).sqrt()


class KGModel(nn.Module):
    """Entity encoder and reciprocal relation embeddings with a ComplEx or RotatE score."""

    def __init__(self, num_entities: int, num_relations: int, dim: int, scorer: str, feature_dims: dict[str, int]) -> None:
        super().__init__()
        self.dim, self.scorer = dim, scorer
        self.encoder = EntityEncoder(num_entities, 2 * dim, feature_dims)
        self.relations = nn.Embedding(2 * num_relations, 2 * dim if scorer == "complex" else dim)
        if scorer == "complex":
            nn.init.normal_(self.relations.weight, std=0.1)
        else:
            nn.init.uniform_(self.relations.weight, -torch.pi, torch.pi)

    def score(self, entities: torch.Tensor, heads: torch.Tensor, relations: torch.Tensor,
              candidates: torch.Tensor) -> torch.Tensor:
        """(B, C) scores of every candidate tail for the queries (head, relation)."""
        h_re, h_im = entities[heads].chunk(2, dim=-1)
        t_re, t_im = entities[candidates].chunk(2, dim=-1)
        if self.scorer == "complex":
            r_re, r_im = self.relations(relations).chunk(2, dim=-1)
            q_re, q_im = h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re
            return q_re @ t_re.T + q_im @ t_im.T
        phase = self.relations(relations)
        q_re, q_im = h_re * phase.cos() - h_im * phase.sin(), h_re * phase.sin() + h_im * phase.cos()
        distance = ((q_re.unsqueeze(1) - t_re) ** 2 + (q_im.unsqueeze(1) - t_im) ** 2 + 1e-9).sqrt().sum(-1)
        return -distance

    def n3(self, entities: torch.Tensor, heads: torch.Tensor, relations: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        """Nuclear 3-norm of the scored factors (Lacroix et al. 2018), per query."""
        total = (modulus(entities[heads]) ** 3).sum(-1) + (modulus(entities[tails]) ** 3).sum(-1)
        if self.scorer == "complex":
            total = total + (modulus(self.relations(relations)) ** 3).sum(-1)
        return total.mean()
