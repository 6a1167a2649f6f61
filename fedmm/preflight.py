"""Checks before any work: whether the data, the device and the tracking store can serve a config.

:func:`preflight` raises on what would fail later and returns warnings with numbers for
what would only disappoint; ``fedmm run`` calls it before starting an orchestrator.
"""

from __future__ import annotations

import numpy as np

from fedmm.config import Config, ConfigError
from fedmm.data.prepare import holdout_count
from fedmm.data.sources import SOURCES, source_info
from fedmm.data.validation import DataValidationError
from fedmm.runtime import resolve_device, tracking_uri
from fedmm.tracking.lock import LockError, check_supported


def preflight(config: Config) -> list[str]:
    """Checks that need no work: the data's description, the device, and whether the data can fill the config.

    Raises on what would fail later (a modality the data lacks, CUDA without a GPU, a
    bring-your-own-data file that is corrupt or unusable, more clients than the data can
    fill); returns warnings with numbers for what would only disappoint (a test set too
    small for promotion).
    """
    info = source_info(config.data)
    named = {m for group in config.mask.client_modalities for m in group.modalities} | set(config.mask.missing_rate)
    named |= set(config.validation.value_bounds)
    named |= {c.modality for c in config.corruption.clients if c.modality is not None}
    unknown = named - set(info.modalities)
    if unknown:
        raise DataValidationError(
            f"the config names modalities {sorted(unknown)} that data source {info.name!r} lacks; "
            f"it has {list(info.modalities)}"
        )
    try:
        resolve_device(config.train.device)
        check_supported(tracking_uri())
    except (ValueError, LockError) as error:
        raise ConfigError(str(error)) from None
    if config.data.source != "npz":
        return []
    dataset = SOURCES["npz"].load(config.data, info)
    return data_fit(config, dataset.subject, dataset.recording)


def data_fit(config: Config, subject: np.ndarray, recording: np.ndarray) -> list[str]:
    """Whether the configured split and partition fit a dataset of this size (estimates, before any work)."""
    data, partition = config.data, config.partition
    subjects = np.unique(subject)
    holdout = holdout_count(data.holdout_subjects, len(subjects))
    if holdout >= len(subjects):
        raise ConfigError(
            f"data.holdout_subjects={holdout} but the data has {len(subjects)} subject(s); "
            "set data.holdout_subjects=0 or auto"
        )
    kept = len(subject) * (1 - holdout / len(subjects))
    recordings = len(np.unique(recording))
    pool = int(kept * (1 - data.test_fraction - data.val_fraction) * (1 - partition.proxy_fraction))
    test = int(kept * data.test_fraction)
    where = (f"{len(subject)} samples in {recordings} recordings, {len(subjects)} subject(s), "
             f"{holdout} held out, {data.test_fraction:.0%} test, {data.val_fraction:.0%} validation")
    if partition.scheme == "natural":
        clients = len(subjects) - holdout
    else:
        clients = partition.num_clients
    needed = max(partition.min_samples, config.validation.min_samples_per_client)
    if clients * needed > pool:
        setting = ("partition.min_samples" if partition.min_samples >= config.validation.min_samples_per_client
                   else "validation.min_samples_per_client")
        fewer = ("hold out fewer subjects (data.holdout_subjects; natural partitions have one client per subject)"
                 if partition.scheme == "natural" else "lower partition.num_clients")
        raise ConfigError(
            f"{clients} clients of at least {needed} samples need {clients * needed} training samples, but the "
            f"data leaves about {pool} ({where}); {fewer} or lower {setting}"
        )
    warnings = []
    held = len(subject) - kept
    if holdout and held > 0.25 * len(subject):
        warnings.append(
            f"data.holdout_subjects={holdout} holds out about {held:.0f} of {len(subject)} samples "
            f"({holdout} of {len(subjects)} subjects) as a second test set; set "
            "data.holdout_subjects=0 to train on them"
        )
    if partition.scheme == "natural" and clients < 3:
        warnings.append(f"only {clients} clients (one per subject not held out): {where}")
    if test < config.registry.min_test_samples:
        warnings.append(
            f"about {test} test samples ({where}): below registry.min_test_samples="
            f"{config.registry.min_test_samples}, so the model will not be promoted; set registry.min_test_samples "
            f"to what this data allows, and registry.confidence (now {config.registry.confidence}) for how sure a "
            "challenger must be to beat the champion on so few samples"
        )
    return warnings
