"""One isolated fedmm state folder (ZenML store, MLflow DB) shared by the whole test session (each xdist worker's).

The folder is removed when every test passed (kept, for inspection, when one failed).
Modules in ``SLOW_MODULES`` are marked ``slow``: ``make test-fast`` leaves them out, CI
(``make test``) runs everything.
"""

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["FEDMM_HOME"] = tempfile.mkdtemp(prefix="fedmm-test-")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("ZENML_CONFIG_PATH", None)

from fedmm import runtime  # noqa: E402
from fedmm.config import ModelConfig  # noqa: E402
from fedmm.data.federated import partition_and_mask, proxy_arrays  # noqa: E402
from fedmm.data.prepare import prepare  # noqa: E402
from fedmm.fl.strategy import ServerContext  # noqa: E402
from fedmm.fl.training import model_spec  # noqa: E402
from fedmm.models.multimodal import ModelSpec  # noqa: E402
from fedmm.tensors import TensorData  # noqa: E402

runtime.configure()

if not getattr(sys.modules["__main__"], "__file__", None):
    # An xdist worker's main module (execnet's) has no file, where ZenML takes its source root from:
    # give it the one `python -m pytest` gives it (pytest's folder), or every pipeline run fails.
    from zenml.utils import source_utils

    source_utils.set_custom_source_root(str(Path(pytest.__file__).parent))

REPO = Path(__file__).resolve().parents[1]

# Each takes minutes on 2 cores: real Flower processes, ZenML/kfp/DVC pipelines, experiment
# matrices, two registry backends, resumable strategy runs.
SLOW_MODULES = {
    "test_flower", "test_flower_runs", "test_pipeline", "test_experiment", "test_kfp", "test_dvc", "test_fedmekt", "test_fedmobile",
    "test_strategies", "test_promotion_concurrency", "test_promotion_registry", "test_serve_imputer",
    "test_kg_registry", "test_kg_pipeline", "test_mmkt_rounds", "test_presence_pipeline",
}


# The longest modules first, so that `make test`'s two workers (pytest-xdist, one module at a time each,
# the next as one is free) finish together: the short ones, in collection order, fill the end. The
# deployed run and the Flower modules mostly wait on their processes (CPU seconds per wall second: 0.4,
# 0.6-0.7), so each is lined up against modules that keep a core busy (kfp, DVC, the pipelines: 0.8-1).
# Wall seconds on a worker, 2 cores:
FIRST_MODULES = [
    "test_deploy",  # 170 s
    "test_kfp",  # 60-75
    "test_bad_input",  # 75
    "test_flower",  # 185
    "test_dvc",  # 60
    "test_pipeline",  # 50
    "test_flower_runs",  # 145
    "test_promotion_concurrency",  # 45
    "test_promotion_registry",  # 30
    "test_presence_pipeline",  # 20
]


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(FIRST_MODULES)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        shutil.rmtree(os.environ["FEDMM_HOME"], ignore_errors=True)


def prepared_and_partitioned(config):
    """A config's prepared data and client partition: what a strategy test trains on."""
    prepared = prepare(config.data, config.seed)
    return prepared, partition_and_mask(prepared, config.partition, config.mask, config.seed)


@pytest.fixture(scope="module")
def data(request):
    """The prepared data and partition of the test module's ``config()``."""
    return prepared_and_partitioned(request.module.config())


SYNTHETIC_CLASSES = 3
SYNTHETIC_SPEC = ModelSpec.build(
    {"acc": (3, 20), "gyro": (2, 20)}, SYNTHETIC_CLASSES, ModelConfig(embed_dim=8, channels=4, fusion_dim=8),
    {"acc": np.array([[0.0] * 3, [1.0] * 3]), "gyro": np.array([[0.0] * 2, [1.0] * 2])},
)


def synthetic(labels, seed, mask=None) -> TensorData:
    """Samples of :data:`SYNTHETIC_SPEC` whose two modalities carry a class-dependent wave (all present by default)."""
    labels = np.asarray(labels)
    mask = np.ones((len(labels), 2), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    rng = np.random.default_rng(seed)
    wave = np.sin(2 * np.pi * (labels[:, None] + 1) * np.linspace(0, 1, 20))[:, None, :]
    inputs = {"acc": (wave + 0.3 * rng.standard_normal((len(labels), 3, 20))) * mask[:, :1, None],
              "gyro": (-wave + 0.3 * rng.standard_normal((len(labels), 2, 20))) * mask[:, 1:, None]}
    return TensorData.from_numpy(inputs, mask, labels)


def proxy_server(config, data) -> ServerContext:
    """The server context of a config's run: model spec and its labelled proxy set."""
    prepared, federated = data
    return ServerContext(model_spec(config, prepared), proxy=TensorData.from_numpy(*proxy_arrays(prepared, federated)))


def assert_same_training(a, b):
    """Two training results with the same history and bit-identical final states."""
    assert a.history == b.history
    for name in a.state:
        torch.testing.assert_close(a.state[name], b.state[name], rtol=0, atol=0)


@contextmanager
def interrupted_after_round(completed_rounds: int):
    """Training inside this block stops (KeyboardInterrupt) right after round ``completed_rounds`` is checkpointed."""
    from fedmm.fl import engine

    real = engine._save_checkpoint

    def crash(path, completed, *rest):
        real(path, completed, *rest)
        if completed == completed_rounds:
            raise KeyboardInterrupt("simulated interruption")

    engine._save_checkpoint = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        engine._save_checkpoint = real
TINY = REPO / "configs" / "tiny.yaml"


def write_synthetic_npz(
    path: Path,
    n_recordings: int = 24,
    windows_per_recording: int = 10,
    num_classes: int = 3,
    subjects: int = 4,
    seed: int = 0,
) -> Path:
    """A small bring-your-own-data file: two modalities whose signal depends on the class."""
    rng = np.random.default_rng(seed)
    recording_label = np.arange(n_recordings) % num_classes
    recording_subject = (np.arange(n_recordings) // num_classes) % subjects
    recording = np.repeat(np.arange(n_recordings), windows_per_recording)
    labels = recording_label[recording]
    n = len(labels)
    t = np.linspace(0, 1, 20)
    wave = np.sin(2 * np.pi * (labels[:, None] + 1) * t)[:, None, :]
    acc = wave + 0.3 * rng.standard_normal((n, 3, 20))
    gyro = -wave + 0.3 * rng.standard_normal((n, 2, 20))
    np.savez(
        path,
        **{"modality/acc": acc.astype(np.float32), "modality/gyro": gyro.astype(np.float32)},
        labels=labels.astype(np.int64),
        class_names=np.array([f"c{k}" for k in range(num_classes)]),
        subject=recording_subject[recording].astype(np.int64),
        recording=recording.astype(np.int64),
    )
    return path


@pytest.fixture
def synthetic_npz(tmp_path: Path) -> Path:
    return write_synthetic_npz(tmp_path / "data.npz")


def synthetic_overrides(path: Path, model_name: str) -> list[str]:
    """Overrides that run the tiny config on a synthetic file."""
    return [
        "data.source=npz",
        f"data.path={path}",
        "data.holdout_subjects=1",
        "data.test_fraction=0.25",
        "data.val_fraction=0.125",
        f"registry.model_name={model_name}",
        "registry.min_macro_f1=0.0",
        "validation.value_bounds={acc: [-10, 10], gyro: [-10, 10]}",
    ]
