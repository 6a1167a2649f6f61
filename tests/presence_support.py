"""A synthetic bring-your-own-data file with genuine missing modalities and a known structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_presence_npz(
    path: Path, gyro_absent: float = 0.4, mag_absent_subject: int | None = 0, n_recordings: int = 48,
    windows: int = 4, seed: int = 0,
) -> Path:
    """Three modalities (acc, gyro, mag), each carrying the class as a frequency; 3 classes, 4 subjects.

    ``present/gyro`` is False for exactly a seeded ``gyro_absent`` share of samples (NaN filler there);
    ``mag`` is absent from every sample of subject ``mag_absent_subject`` (finite filler 999),
    as a site that never had the sensor. acc is always present, so every sample has a modality.
    """
    rng = np.random.default_rng(seed)
    label_of = np.arange(n_recordings) % 3
    subject_of = (np.arange(n_recordings) // 3) % 4
    recording = np.repeat(np.arange(n_recordings), windows)
    labels, subject = label_of[recording], subject_of[recording]
    n = len(labels)
    wave = np.sin(2 * np.pi * (labels[:, None] + 1) * np.linspace(0, 1, 16))[:, None, :]
    acc = wave + 0.5 * rng.standard_normal((n, 3, 16))
    gyro = -wave + 0.3 * rng.standard_normal((n, 3, 16))
    mag = np.eye(3)[labels] + 0.2 * rng.standard_normal((n, 3))
    gyro_present = np.ones(n, dtype=bool)
    gyro_present[rng.permutation(n)[: int(round(gyro_absent * n))]] = False
    gyro[~gyro_present] = np.nan
    mag_present = subject != mag_absent_subject
    mag[~mag_present] = 999.0
    np.savez(
        path, **{"modality/acc": acc.astype(np.float32), "modality/gyro": gyro.astype(np.float32),
                 "modality/mag": mag.astype(np.float32), "present/gyro": gyro_present, "present/mag": mag_present},
        labels=labels.astype(np.int64), subject=subject.astype(np.int64), recording=recording.astype(np.int64),
    )
    return path
