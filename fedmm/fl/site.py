"""A site: one client's own data, validated, masked and trained on where it lives.

The server describes the run once (:class:`RunSpec`: the config, the model spec, the
modality order, the client count); a site combines it with its own data file (the
bring-your-own-data ``.npz`` layout, one file per site) and its client id. Masking, label
hiding and corruption are drawn at the site from the same seeded streams as the in-process
partition (:func:`~fedmm.data.federated.site_arrays`), so a site's training data equals what
the simulation gives that client. What the site keeps between rounds (MOON's previous model,
FedMEKT's autoencoder) is stored on its own disk per run, so a resumed run finds it.

Transport-agnostic: Flower's ClientApp (:mod:`fedmm.flower.client_app`) is a thin adapter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path

import numpy as np

from fedmm.artifacts import read_npz, write_npz
from fedmm.config import Config
from fedmm.data.corruption import CorruptionPlan
from fedmm.data.dataset import MultimodalDataset, load_npz
from fedmm.data.federated import site_arrays
from fedmm.data.images import square_images
from fedmm.data.validation import ExpectationOutcome, ValidationReport, validate_dataset
from fedmm.fl.client import Worker
from fedmm.fl.codec import arrays_state, state_arrays
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.payload import client_payload
from fedmm.fl.strategies import make_strategy
from fedmm.fl.strategy import ServerContext, Strategy
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.tensors import UNLABELLED, State, TensorData


@dataclass(frozen=True)
class RunSpec:
    """What the server tells every site about a run (plain JSON)."""

    config: dict
    spec: dict
    modalities: list[str]
    num_clients: int
    fingerprint: str
    value_bounds: dict[str, list[float]]
    held_out: list[str] = field(default_factory=list)
    """:func:`sample_hashes` of the samples the server keeps for validation and test (a deployed run's
    coordinator): a site holding any of them is refused, so no test sample is trained on."""

    def to_json(self) -> str:
        return json.dumps({item.name: getattr(self, item.name) for item in fields(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))

    @cached_property
    def parsed(self) -> Config:
        return Config.model_validate(self.config)

    @cached_property
    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.spec)

    @property
    def key(self) -> str:
        """Identifies the run's training (its fingerprint): kept state is stored under it."""
        return self.fingerprint[:16]


class SiteError(ValueError):
    """A site's data does not fit the run (wrong modalities, an unknown client id)."""


class Site:
    """One client's data file and local state directory; trains when the server asks."""

    def __init__(self, data_path: str | Path, client_id: int, state_dir: str | Path, device: str = "cpu") -> None:
        self.data_path, self.client_id, self.device = Path(data_path), int(client_id), device
        self.state_dir = Path(state_dir)
        self._run_key: str | None = None
        self._strategy: Strategy | None = None
        self._data: TensorData | None = None
        self._worker: Worker | None = None

    @cached_property
    def dataset(self) -> MultimodalDataset:
        return load_npz(self.data_path)

    @cached_property
    def data_sha256(self) -> str:
        return hashlib.sha256(self.data_path.read_bytes()).hexdigest()

    def profile(self, run: RunSpec | None = None) -> dict:
        """What the server may know of this site's data: counts, class histogram, modality presence (JSON strings).

        Presence is the share of samples holding each modality (of the run's, given one: 0 for one the file lacks).
        """
        dataset = self.dataset if run is None else self.data_for(run)
        labels = dataset.labels[dataset.labels >= 0]
        return {"samples": len(dataset), "classes": json.dumps(np.bincount(labels, minlength=dataset.num_classes).tolist()),
                "modalities": json.dumps(dataset.presence_rates())}

    def data_for(self, run: RunSpec) -> MultimodalDataset:
        """This site's samples over the run's modalities (:meth:`MultimodalDataset.aligned`: one the file lacks is
        absent), prepared as the run's data is (``data.square_images``)."""
        if not set(run.modalities) & set(self.dataset.modalities):
            raise SiteError(f"site file {self.data_path} holds none of this run's modalities {run.modalities}")
        if not 0 <= self.client_id < run.num_clients:
            raise SiteError(f"client id {self.client_id} is outside 0..{run.num_clients - 1} for this run")
        shapes = {name: tuple(run.model_spec.sample_shapes[name]) for name in run.modalities}
        dataset = square_images(self.dataset) if run.parsed.data.square_images else self.dataset
        return dataset.aligned(shapes, str(self.data_path))

    def validate(self, run: RunSpec) -> ValidationReport:
        """The prepared-data suite (Great Expectations) over this site's samples; only the report leaves the site."""
        dataset, spec = self.data_for(run), run.model_spec
        report = validate_dataset(
            modalities=dataset.modalities,
            labels=dataset.labels,
            num_classes=spec.num_classes,
            expected_shapes={name: tuple(shape) for name, shape in spec.sample_shapes.items()},
            value_bounds={name: tuple(bounds) for name, bounds in run.value_bounds.items()},
            presence=dataset.presence,
        )
        if not run.held_out:
            return report
        shared = len(set(sample_hashes(dataset.modalities)) & set(run.held_out))
        outcome = ExpectationOutcome("expect_no_held_out_samples", "samples", shared == 0, shared, len(dataset),
                                     "samples the server keeps for validation or test")
        return ValidationReport(report.suite, report.success and shared == 0, (*report.outcomes, outcome))

    def _prepare(self, run: RunSpec) -> None:
        """Build the run's training data, worker model and client-side strategy once per run."""
        if self._run_key == run.key:
            return
        dataset, config = self.data_for(run), run.parsed
        inputs, presence, labels = site_arrays(
            dataset.modalities, dataset.labels, self.client_id, run.num_clients, config.mask,
            config.partition.label_fraction, CorruptionPlan(config.corruption, config.seed), config.seed,
            run.model_spec.num_classes, dataset.presence,
        )
        self._data = TensorData.from_numpy(inputs, presence, labels, self.device)
        self._worker = Worker(build_model(run.model_spec, config.seed).to(self.device))
        self._run_key, self._strategy = run.key, None

    def _strategy_for(self, run: RunSpec, proxy: TensorData | None) -> Strategy:
        if self._strategy is None:
            config = run.parsed
            self._strategy = make_strategy(config.train, config.seed, ServerContext(run.model_spec, self.device, proxy))
        return self._strategy

    def fit(
        self, run: RunSpec, global_state: State, server_state: State, instruction: TrainInstruction,
        proxy: TensorData | None = None,
    ):
        """This site's payload for one round (what the in-process engine computes for its client)."""
        if instruction.client_id != self.client_id:
            raise SiteError(f"instruction for client {instruction.client_id} reached site {self.client_id}")
        self._prepare(run)
        strategy = self._strategy_for(run, proxy)
        strategy.load_server_state(server_state)
        config = run.parsed
        store = KeptFiles(self.state_dir / "kept" / run.key, self.client_id)
        payload, kept = client_payload(
            self._worker, global_state, self._data, instruction, strategy,
            CorruptionPlan(config.corruption, config.seed), store.load(instruction.server_round, self.device),
        )
        store.save(instruction.server_round, kept)
        return payload


class KeptFiles:
    """A site's kept state on its own disk: ``client_<k>_round_XXXX.npz`` is what it kept after round XXXX.

    At round r the latest snapshot of an earlier round is loaded, so a round that is rerun
    after a server restart starts from what the client had before it. The server checkpoints
    round r before it sends round r + 1, so a rerun goes back one round at most: saving round r
    keeps that snapshot and the latest earlier one, and removes the rest.
    """

    def __init__(self, directory: Path, client_id: int) -> None:
        self.directory, self.client_id = Path(directory), client_id

    def _rounds(self) -> dict[int, Path]:
        prefix = f"client_{self.client_id}_round_"
        return {int(p.stem.removeprefix(prefix)): p for p in self.directory.glob(prefix + "*.npz")}

    def load(self, server_round: int, device: str) -> State | None:
        earlier = {r: path for r, path in self._rounds().items() if r < server_round}
        if not earlier:
            return None
        return arrays_state(read_npz(earlier[max(earlier)]), device=device)

    def save(self, server_round: int, kept: State | None) -> None:
        if kept is None:
            return
        write_npz(self.directory / f"client_{self.client_id}_round_{server_round:04d}.npz", state_arrays(kept))
        rounds = self._rounds()
        previous = max((r for r in rounds if r < server_round), default=server_round)
        for r, path in rounds.items():
            if r < previous:
                path.unlink()


def sample_hashes(modalities: dict[str, np.ndarray]) -> list[str]:
    """SHA-256 of each sample's values (float32, the modalities in the given order): equal samples, equal hashes."""
    arrays = [np.ascontiguousarray(array, dtype=np.float32).reshape(len(array), -1) for array in modalities.values()]
    return [hashlib.sha256(b"".join(array[i].tobytes() for array in arrays)).hexdigest() for i in range(len(arrays[0]))]


def proxy_inputs(proxy: TensorData) -> dict[str, np.ndarray]:
    """What a site may see of the server's proxy set: ``inputs/<modality>`` and ``mask``, never labels."""
    arrays = {f"inputs/{name}": value.cpu().numpy() for name, value in proxy.inputs.items()}
    return {**arrays, "mask": proxy.mask.cpu().numpy()}


def unlabelled_proxy(arrays: dict[str, np.ndarray], device: str = "cpu") -> TensorData:
    """The proxy set a site trains with (:func:`proxy_inputs`), every label :data:`UNLABELLED`."""
    inputs = {key.removeprefix("inputs/"): value for key, value in arrays.items() if key.startswith("inputs/")}
    return TensorData.from_numpy(inputs, arrays["mask"], np.full(len(arrays["mask"]), UNLABELLED), device)


def export_site_files(prepared, federated, directory: str | Path) -> list[Path]:
    """One bring-your-own-data file per client holding that client's raw (unmasked) samples.

    This is what a real site brings; the loopback federation gives each SuperNode one.
    Samples are listed in partition order (what :func:`~fedmm.data.federated.site_arrays` expects); a
    modality none of a client's samples has is left out of its file, as a site that never had it.
    """
    directory = Path(directory)
    paths = []
    for client in range(federated.num_clients):
        members = federated.pool_index[np.flatnonzero(federated.client == client)]
        path = directory / f"site_{client}.npz"
        write_npz(path, prepared.dataset.subset(members).to_arrays(omit_absent=True))
        paths.append(path)
    return paths


def check_site_file(data_path: str | Path, config_path: str | Path | None = None) -> tuple[bool, list[str]]:
    """Validate a site file on its own (no run, no connection): ``(passed, report lines)``.

    The suite is the one a run applies (shapes, labels, non-finite values, and the config's
    ``validation.value_bounds`` when a config is given); the lines give the counts, the class
    histogram and each modality's shape, then the verdict and every failed expectation.
    """
    from fedmm.config import load_config

    dataset = load_npz(data_path)
    config = load_config(config_path, []) if config_path else None
    if config is not None and config.data.square_images:
        dataset = square_images(dataset)
    bounds = config.validation.value_bounds if config is not None else {}
    unknown = sorted(set(bounds) - set(dataset.modalities))
    report = validate_dataset(
        modalities=dataset.modalities, labels=dataset.labels, num_classes=dataset.num_classes,
        expected_shapes={name: array.shape[1:] for name, array in dataset.modalities.items()},
        value_bounds={name: tuple(b) for name, b in bounds.items() if name not in unknown}, presence=dataset.presence,
    )
    counts = np.bincount(dataset.labels[dataset.labels >= 0], minlength=dataset.num_classes)
    lines = [
        f"{Path(data_path).name}: {len(dataset)} samples, {dataset.num_classes} classes",
        "classes: " + ", ".join(f"{name} {int(n)}" for name, n in zip(dataset.class_names, counts)),
        "modalities: " + ", ".join(f"{name} {tuple(a.shape[1:])} present in {rate:.0%}"
                                   for (name, a), rate in zip(dataset.modalities.items(), dataset.presence_rates().values())),
    ]
    if unknown:
        lines.append(f"config value bounds for modalities this file lacks: {unknown}")
    lines.append("validation: passed" if report.success else f"validation: FAILED ({len(report.failed())} expectations)")
    lines += [f"  {outcome.describe()}" for outcome in report.failed()]
    return report.success, lines
