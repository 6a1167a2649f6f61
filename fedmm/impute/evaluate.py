"""Imputation evaluation: mask complete held-out samples by pattern and rate, impute, score.

Patterns: ``missing:<modality>`` (that modality absent) and ``random`` (a uniformly random
non-empty proper subset of the modalities absent: one of two for the smartwatch, a random
view subset for six views). ``rate`` is the exact share of samples that lose something.

Per (pattern, rate, imputer) it reports

- reconstruction over the absent (sample, modality) entries: NRMSE (root of the squared
  error over the squared deviation of the truth from its test-set mean, so predicting the
  truth's mean scores about 1) and mean cosine similarity, in the imputer's own space
  (input imputers: the model-standardised signals) and in the shared latent space of the
  trained encoders (input imputations encoded; latent ones compared directly);
- downstream macro-F1 of the model on the imputed embeddings, with imputed modalities
  flagged present (``macro_f1_present``) and flagged absent (``macro_f1_absent``);
  ``macro_f1`` is the imputer's own convention (zero fill: absent, i.e. the model's native
  missing path, which is the floor; the others: present). ``gap_recovered`` is the share of
  the floor-to-oracle (true values) gap that ``macro_f1`` closes;
- cost: fit seconds and imputation seconds per 1,000 test samples (the imputer's call only;
  encoding the test set is shared and not counted).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from fedmm.errors import UserError
from fedmm.impute.base import ImputationError, Imputer, standardized_blocks
from fedmm.impute.report import ImputationReport
from fedmm.impute_config import MISSING, RANDOM, RATES
from fedmm.metrics import classification_metrics
from fedmm.models.multimodal import MultimodalNet
from fedmm.seeding import rng_for
from fedmm.tensors import TensorData

MIN_COMPLETE_SAMPLES = 10
"""Imputation is scored on samples that have every modality (the ground truth); fewer than this is refused."""


class TooFewCompleteError(ImputationError, UserError):
    """A split has too few complete samples to score imputation on."""


def complete_samples(data: TensorData, owners: np.ndarray, what: str) -> tuple[TensorData, np.ndarray]:
    """The samples of ``data`` (and their owners) that have every modality; too few is a one-line error."""
    complete = data.mask.all(dim=1)
    count = int(complete.sum())
    if count < MIN_COMPLETE_SAMPLES:
        raise TooFewCompleteError(
            f"the {what} split has {count} of {len(data)} samples with every modality; imputation is scored against "
            f"complete samples and needs at least {MIN_COMPLETE_SAMPLES}: set impute.evaluate=false for this data"
        )
    index = torch.nonzero(complete).flatten()
    return data.take(index), owners[index.cpu().numpy()]


def default_patterns(modalities: list[str]) -> list[str]:
    """One pattern per modality plus random subsets."""
    return [MISSING + name for name in modalities] + [RANDOM]


def draw_mask(pattern: str, rate: float, num_samples: int, modalities: list[str], seed: int) -> np.ndarray:
    """Presence (n, M): ``round(rate * n)`` seeded samples lose what the pattern says."""
    rng = rng_for(seed, "impute", "eval-mask", pattern, f"{rate:g}")
    hit = rng.permutation(num_samples)[: int(round(rate * num_samples))]
    mask = np.ones((num_samples, len(modalities)), dtype=bool)
    if pattern == RANDOM:
        sizes = rng.integers(1, len(modalities), size=len(hit))
        ranks = rng.random((len(hit), len(modalities))).argsort(1).argsort(1)
        mask[hit] = ranks >= sizes[:, None]
    elif pattern.startswith(MISSING) and pattern[len(MISSING):] in modalities:
        mask[hit, modalities.index(pattern[len(MISSING):])] = False
    else:
        known = default_patterns(modalities)
        raise ImputationError(f"unknown pattern {pattern!r}; use one of {known}")
    return mask


def reconstruction(imputed: list[np.ndarray], truth: list[np.ndarray], missing: np.ndarray) -> tuple[float, float]:
    """NRMSE and mean cosine similarity over the absent entries of per-modality (n, D_m) blocks."""
    error = reference = 0.0
    cosines = []
    for m, (guess, true) in enumerate(zip(imputed, truth)):
        rows = missing[:, m]
        if not rows.any():
            continue
        guess, centre = guess[rows], true.mean(0)
        true = true[rows]
        error += float(((guess - true) ** 2).sum())
        reference += float(((true - centre) ** 2).sum())
        norms = np.linalg.norm(guess, axis=1) * np.linalg.norm(true, axis=1)
        cosines.append((guess * true).sum(1) / np.maximum(norms, 1e-12))
    if not cosines:
        return float("nan"), float("nan")
    return float(np.sqrt(error / max(reference, 1e-12))), float(np.concatenate(cosines).mean())


def _latent_blocks(embeddings: torch.Tensor) -> list[np.ndarray]:
    return [block.cpu().numpy().astype(np.float64) for block in embeddings.unbind(1)]


@torch.no_grad()
def _macro_f1(model: MultimodalNet, embeddings: torch.Tensor, flags: torch.Tensor, labels: np.ndarray) -> float:
    predictions = model.head(model.fuse(embeddings, flags)).argmax(1).cpu().numpy()
    return classification_metrics(labels, predictions)["macro_f1"]


@torch.no_grad()
def evaluate_imputation(
    model: MultimodalNet,
    test: TensorData,
    imputers: dict[str, Imputer],
    owners: np.ndarray,
    seed: int,
    patterns: list[str] | None = None,
    rates: tuple[float, ...] = RATES,
) -> ImputationReport:
    """Score fitted imputers on a complete test set masked by every pattern and rate.

    ``owners`` (n,) names the client each test sample lives on (client-local imputers use
    that client's imputer; see :mod:`fedmm.impute.clients`).
    """
    if not bool(test.mask.all()):
        raise ImputationError("the imputation test set must have every modality present (it is the ground truth)")
    model.eval()
    modalities = model.modalities
    patterns = list(patterns or default_patterns(modalities))
    labels = test.labels.cpu().numpy()
    everything = torch.ones_like(test.mask)
    true_embeddings = model.embed(test.inputs, everything)
    true_latent = _latent_blocks(true_embeddings)
    true_inputs = standardized_blocks(model, test.inputs)
    oracle = _macro_f1(model, true_embeddings, everything, labels)
    rows = []
    for pattern in patterns:
        for rate in rates:
            presence = draw_mask(pattern, rate, len(test), modalities, seed)
            mask = torch.as_tensor(presence, device=test.mask.device)
            missing = ~presence
            observed = {
                name: x * mask[:, m].reshape(-1, *[1] * (x.ndim - 1)) for m, (name, x) in enumerate(test.inputs.items())
            }
            observed_embeddings = true_embeddings * mask.unsqueeze(-1)
            floor = _macro_f1(model, observed_embeddings, mask, labels)
            for name, imputer in imputers.items():
                start = time.perf_counter()
                if imputer.space == "input":
                    filled = imputer.impute(observed, mask, owners)
                    seconds = time.perf_counter() - start
                    embeddings = model.embed(filled, everything)
                else:
                    embeddings = imputer.impute(observed_embeddings, mask, owners)
                    seconds = time.perf_counter() - start
                latent = reconstruction(_latent_blocks(embeddings), true_latent, missing)
                own = latent
                if imputer.space == "input":
                    own = reconstruction(standardized_blocks(model, filled), true_inputs, missing)
                present_f1 = _macro_f1(model, embeddings, everything, labels)
                absent_f1 = _macro_f1(model, embeddings, mask, labels)
                f1 = present_f1 if imputer.marks_present else absent_f1
                rows.append({
                    "pattern": pattern,
                    "rate": float(rate),
                    "imputer": name,
                    "space": imputer.space,
                    "samples": len(test),
                    "missing_entries": int(missing.sum()),
                    "nrmse_own": own[0],
                    "cosine_own": own[1],
                    "nrmse_latent": latent[0],
                    "cosine_latent": latent[1],
                    "macro_f1": f1,
                    "macro_f1_present": present_f1,
                    "macro_f1_absent": absent_f1,
                    "floor_macro_f1": floor,
                    "oracle_macro_f1": oracle,
                    "gap_recovered": (f1 - floor) / (oracle - floor) if oracle - floor > 1e-9 else float("nan"),
                    "fit_seconds": imputer.fit_seconds,
                    "impute_seconds_per_1k": seconds / len(test) * 1000,
                })
    meta = {
        "modalities": modalities,
        "patterns": patterns,
        "rates": [float(r) for r in rates],
        "seed": seed,
        "samples": len(test),
        "imputers": {name: {"space": imp.space, "marks_present": imp.marks_present} for name, imp in imputers.items()},
    }
    return ImputationReport(pd.DataFrame(rows), meta)
