"""The registered FedMMKT server generator: an MLflow pyfunc from prompt embeddings and starting noise to images.

Input: ``text_embedding`` (float32 (B, 384), MiniLM embeddings of the prompts) and ``noise``
(float32 (B, 256), the DDIM starting noise). Output: (B, 256) 16x16 images in [0, 1]. Saved
from code (``generator_code.py``) with npz/JSON weights, hashed at registration like the
task model (:func:`fedmm.tracking.pyfunc.save_pyfunc`).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models import infer_signature

from fedmm.artifacts import read_json, read_npz, write_json, write_npz
from fedmm.fl.engine import arrays_to_state, state_to_arrays
from fedmm.mmkt.config import GeneratorConfig
from fedmm.mmkt.generator import IMAGE_DIM, TextToImage
from fedmm.tracking.pyfunc import save_pyfunc

GENERATOR_CODE = Path(__file__).with_name("generator_code.py")
WEIGHTS_FILE, CONFIG_FILE = "generator.npz", "generator.json"


def save_network(generator: TextToImage, directory: Path) -> Path:
    write_npz(directory / WEIGHTS_FILE, state_to_arrays(generator.state_dict()))
    write_json(directory / CONFIG_FILE, generator.config.model_dump(mode="json"))
    return directory


def load_network(directory: Path) -> TextToImage:
    generator = TextToImage(GeneratorConfig.model_validate(read_json(directory / CONFIG_FILE)))
    generator.load_state_dict(arrays_to_state(read_npz(directory / WEIGHTS_FILE), "cpu"))
    return generator.eval()


def generate_images(generator: TextToImage, model_input: dict[str, np.ndarray]) -> np.ndarray:
    text = torch.as_tensor(np.asarray(model_input["text_embedding"]), dtype=torch.float32)
    noise = torch.as_tensor(np.asarray(model_input["noise"]), dtype=torch.float32)
    return generator.sample(text, noise).numpy()


class GeneratorPyfunc(mlflow.pyfunc.PythonModel):
    """Images from prompt embeddings and starting noise."""

    def load_context(self, context) -> None:
        self.generator = load_network(Path(context.artifacts["network"]))

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints as a schema
        return generate_images(self.generator, model_input)


def save_generator(generator: TextToImage, text_embedding: np.ndarray, folder: Path) -> tuple[Path, str]:
    """Save the generator as a pyfunc under ``folder/model``; returns the path and its files' SHA-256."""
    network = save_network(generator, folder / "network")
    example = {"text_embedding": text_embedding[:2].astype(np.float32),
               "noise": np.zeros((2, IMAGE_DIM), dtype=np.float32)}
    signature = infer_signature(example, generate_images(generator, example))
    path = folder / "model"
    return path, save_pyfunc(path, network, example, signature, code=GENERATOR_CODE)
