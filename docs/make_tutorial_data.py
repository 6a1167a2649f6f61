"""Write the tutorial's dataset: scikit-learn's handwritten digits as two modalities in fedmm's .npz layout.

Each 8x8 digit image (1,797 of them, 10 classes; Alpaydin & Kaynak 1998, shipped inside
scikit-learn) becomes two feature-vector modalities, its upper half and its lower half
(32 pixels each). The digits carry no writer, so each sample gets one of six sites by a
seeded draw: the ``subject`` array, which fedmm's natural partition makes one client each.

    .venv/bin/python docs/make_tutorial_data.py .fedmm/digits.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

SITES = 6


def digits_npz(path: str, seed: int = 0) -> None:
    """Write the two-modality digits file to ``path``."""
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    site = np.random.default_rng(seed).integers(0, SITES, size=len(images))
    np.savez(
        path,
        **{"modality/upper": images[:, :4].reshape(len(images), -1), "modality/lower": images[:, 4:].reshape(len(images), -1)},
        labels=digits.target.astype(np.int64),
        class_names=np.array([f"digit_{k}" for k in range(10)]),
        subject=site.astype(np.int64),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="the .npz file to write")
    digits_npz(parser.parse_args().path)
