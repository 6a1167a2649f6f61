"""The partition stage's artifact: which samples each client holds and which modalities it sees.

The artifact stores indices, presence masks (the data's own presence AND the simulated
``mask.*``: a sample keeps a modality only where the file has it and the mask leaves it) and
which client samples keep their label (all
unless ``partition.label_fraction`` < 1); the server's proxy set (``partition.proxy_fraction``)
is taken out of the training pool before the clients are drawn. :func:`client_arrays` is the one place
that turns it into training inputs, zeroing every masked value there, so masked values never
reach a client; the ground truth stays in the prepared data for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedmm.artifacts import read_json, read_npz, sha256_arrays, write_json, write_npz
from fedmm.config import CorruptionConfig, MaskConfig, PartitionConfig
from fedmm.data.corruption import CorruptionPlan
from fedmm.data.masking import ModalityMasker
from fedmm.data.partition import PartitionError, make_partitioner
from fedmm.data.prepare import PreparedData
from fedmm.seeding import rng_for
from fedmm.tensors import UNLABELLED, TensorData

ARRAYS_FILE = "clients.npz"
REPORT_FILE = "report.json"


RATES = ("requested_rate", "realised_rate", "kept_rate", "data_missing_rate")
"""A client's missing rates per modality: requested by the simulated mask, realised by it on all the client's
samples, missing in training (the data's absence or the mask's) on the samples it keeps, and missing in the data
itself (``present/<modality>`` False) before any mask.
In JSON each is a key ``<rate>_<modality>`` of the client's row (the partition validation reads those columns)."""


@dataclass
class ClientPartition:
    """One client of a partition: its sample counts, the modalities it holds and its missing rates."""

    client: int
    n_samples: int
    n_labelled: int
    n_dropped: int
    held: list[str]
    class_counts: list[int]
    requested_rate: dict[str, float]
    realised_rate: dict[str, float]
    kept_rate: dict[str, float]
    subject: int | None = None
    """The client's subject under the natural partition."""
    data_missing_rate: dict[str, float] = field(default_factory=dict)
    """Missing in the data itself, before any simulated mask (empty in reports written before presence)."""

    def to_dict(self) -> dict:
        row = {"client": self.client, "n_samples": self.n_samples, "n_labelled": self.n_labelled,
               "n_dropped": self.n_dropped, "held": self.held, "class_counts": self.class_counts}
        if self.subject is not None:
            row["subject"] = self.subject
        for name in self.requested_rate:
            row.update({f"{rate}_{name}": getattr(self, rate)[name] for rate in RATES if name in getattr(self, rate)})
        return row

    @classmethod
    def from_dict(cls, row: dict) -> ClientPartition:
        rates = {rate: {k[len(rate) + 1:]: v for k, v in row.items() if k.startswith(f"{rate}_")} for rate in RATES}
        return cls(row["client"], row["n_samples"], row["n_labelled"], row["n_dropped"], row["held"],
                   row["class_counts"], **rates, subject=row.get("subject"))


@dataclass
class CorruptionRecord:
    """The corruption a partition planned: its config, seed and per-client ground truth
    (``{"client", "corrupted", "kind"}`` rows, from ``CorruptionPlan.ground_truth``)."""

    config: dict
    seed: int
    ground_truth: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"config": self.config, "seed": self.seed, "ground_truth": self.ground_truth}

    @classmethod
    def from_dict(cls, payload: dict) -> CorruptionRecord:
        return cls(payload["config"], payload["seed"], payload.get("ground_truth", []))


@dataclass
class PartitionReport:
    """What the partition stage did (its ``report.json``): the configs and seed it drew with, the samples
    it dropped (every modality masked) or gave the server's proxy set, and each client."""

    scheme: str
    num_clients: int
    partition_config: dict
    mask_config: dict
    seed: int
    dropped_samples: int
    proxy_samples: int
    clients: list[ClientPartition]
    corruption: CorruptionRecord

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "num_clients": self.num_clients, "partition_config": self.partition_config,
                "mask_config": self.mask_config, "seed": self.seed, "dropped_samples": self.dropped_samples,
                "proxy_samples": self.proxy_samples, "clients": [c.to_dict() for c in self.clients],
                "corruption": self.corruption.to_dict()}

    @classmethod
    def from_dict(cls, payload: dict) -> PartitionReport:
        corruption = payload.get("corruption") or {"config": {}, "seed": payload["seed"]}  # reports before corruption
        return cls(payload["scheme"], payload["num_clients"], payload["partition_config"], payload["mask_config"],
                   payload["seed"], payload["dropped_samples"], payload["proxy_samples"],
                   [ClientPartition.from_dict(row) for row in payload["clients"]], CorruptionRecord.from_dict(corruption))


@dataclass
class FederatedData:
    """Client assignment and presence masks over the prepared training pool."""

    pool_index: np.ndarray
    client: np.ndarray
    presence: np.ndarray
    held: np.ndarray
    modalities: list[str]
    report: PartitionReport
    labelled: np.ndarray
    proxy_index: np.ndarray

    @property
    def num_clients(self) -> int:
        return len(self.held)

    @property
    def kept(self) -> np.ndarray:
        return self.presence.any(axis=1)

    def client_rows(self, client: int) -> np.ndarray:
        """Rows (into the pool arrays) of a client's kept samples."""
        return np.flatnonzero((self.client == client) & self.kept)

    def client_table(self) -> pd.DataFrame:
        """One row per client: size and requested/realised missing rate per modality."""
        return pd.DataFrame([c.to_dict() for c in self.report.clients]).drop(columns=["class_counts", "held"])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "pool_index": self.pool_index,
            "client": self.client,
            "presence": self.presence,
            "held": self.held,
            "modalities": np.asarray(self.modalities, dtype=str),
            "labelled": self.labelled,
            "proxy_index": self.proxy_index,
        }

    @property
    def mask(self) -> MaskConfig:
        """The modality mask the clients' presence was drawn with."""
        return MaskConfig.model_validate(self.report.mask_config)

    @property
    def corruption(self) -> CorruptionPlan:
        """The injected corruptions (none unless configured), with their seed."""
        entry = self.report.corruption
        return CorruptionPlan(CorruptionConfig.model_validate(entry.config), entry.seed)

    @property
    def content_hash(self) -> str:
        corruption = self.corruption.config.model_dump_json().encode()
        return sha256_arrays({**self.to_arrays(), "corruption": np.frombuffer(corruption, dtype=np.uint8)})

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        write_npz(directory / ARRAYS_FILE, self.to_arrays())
        write_json(directory / REPORT_FILE, self.report.to_dict())

    @classmethod
    def load(cls, directory: str | Path) -> FederatedData:
        directory = Path(directory)
        arrays = read_npz(directory / ARRAYS_FILE)
        return cls(
            pool_index=arrays["pool_index"],
            client=arrays["client"],
            presence=arrays["presence"],
            held=arrays["held"],
            modalities=[str(m) for m in arrays["modalities"]],
            report=PartitionReport.from_dict(read_json(directory / REPORT_FILE)),
            labelled=arrays["labelled"],
            proxy_index=arrays["proxy_index"],
        )


def partition_and_mask(
    prepared: PreparedData,
    partition: PartitionConfig,
    mask: MaskConfig,
    seed: int,
    corruption: CorruptionConfig | None = None,
) -> FederatedData:
    """Split the training pool across clients, draw their modality masks, plan any corruption."""
    dataset = prepared.dataset
    proxy_index, pool_index = split_proxy(
        prepared.indices("train"), dataset.labels, partition.proxy_fraction, seed,
        dataset.subject if partition.proxy_from == "subjects" else None,
    )
    partitioner = make_partitioner(partition, seed).fit(dataset.labels[pool_index], dataset.subject[pool_index])
    client = partitioner.assignment
    masker = ModalityMasker(dataset.modality_names, mask, seed)
    held = masker.client_modalities(partitioner.num_partitions)
    presence = np.zeros((len(pool_index), len(masker.modalities)), dtype=bool)
    labelled = np.zeros(len(pool_index), dtype=bool)
    rows = []
    for k in range(partitioner.num_partitions):
        members = partitioner.load_partition(k)
        client_mask = masker.mask_client(k, len(members), held[k])
        in_data = dataset.presence[pool_index[members]]
        presence[members] = client_mask.presence & in_data
        kept = presence[members].any(axis=1)
        labelled[members[kept]] = label_draw(int(kept.sum()), partition.label_fraction, seed, k)
        labels = dataset.labels[pool_index[members]][kept]
        missing = ~client_mask.presence
        requested = masker.requested_rates(held[k])
        names = list(enumerate(masker.modalities))
        rows.append(ClientPartition(
            client=k,
            n_samples=int(kept.sum()),
            n_labelled=int(labelled[members].sum()),
            n_dropped=int((~kept).sum()),
            held=[m for m, on in zip(masker.modalities, held[k]) if on],
            class_counts=np.bincount(labels, minlength=dataset.num_classes).tolist(),
            requested_rate={name: float(requested[m]) if held[k, m] else 1.0 for m, name in names},
            realised_rate={name: float(missing[:, m].mean()) if len(members) else 0.0 for m, name in names},
            kept_rate={name: float(1 - presence[members][kept, m].mean()) if kept.any() else 0.0 for m, name in names},
            subject=int(dataset.subject[pool_index[members[0]]]) if partition.scheme == "natural" else None,
            data_missing_rate={name: float(1 - in_data[:, m].mean()) if len(members) else 0.0 for m, name in names},
        ))
    if not presence.any(axis=1).any():
        raise PartitionError("every training sample lost all its modalities")
    small = [row for row in rows if row.n_samples < partition.min_samples]
    if small:
        listed = ", ".join(f"client {r.client} keeps {r.n_samples} of {r.n_samples + r.n_dropped}" for r in small)
        raise PartitionError(
            f"under the mask, {listed} (samples left with no modality, in the data or by the mask, are dropped), below "
            f"partition.min_samples={partition.min_samples}: lower mask.missing_rate or partition.min_samples"
            + ("" if partition.scheme == "natural" else " or partition.num_clients")
        )
    plan = CorruptionPlan(corruption or CorruptionConfig(), seed)
    plan.check(partitioner.num_partitions, masker.modalities)
    report = PartitionReport(
        scheme=partition.scheme,
        num_clients=partitioner.num_partitions,
        partition_config=partition.model_dump(mode="json"),
        mask_config=mask.model_dump(mode="json"),
        seed=seed,
        dropped_samples=int((~presence.any(axis=1)).sum()),
        proxy_samples=len(proxy_index),
        clients=rows,
        corruption=CorruptionRecord(plan.config.model_dump(mode="json"), seed, plan.ground_truth(partitioner.num_partitions)),
    )
    return FederatedData(
        pool_index=pool_index,
        client=client,
        presence=presence,
        held=held,
        modalities=masker.modalities,
        report=report,
        labelled=labelled,
        proxy_index=proxy_index,
    )


def split_proxy(
    train_index: np.ndarray, labels: np.ndarray, fraction: float, seed: int, subjects: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(proxy, pool): the server's rows and the rest of the training rows.

    Without ``subjects``: a seeded, class-stratified ``fraction`` of the rows. With them: every
    row of a seeded ``fraction`` of the training subjects (rounded, at least one, never all),
    so the proxy comes from people no client is.
    """
    if fraction == 0:
        return np.zeros(0, dtype=train_index.dtype), train_index
    rng = rng_for(seed, "proxy")
    if subjects is not None:
        pool_subjects = np.unique(subjects[train_index])
        if len(pool_subjects) < 2:
            raise ValueError("partition.proxy_from 'subjects' needs at least two training subjects")
        count = min(max(1, int(round(fraction * len(pool_subjects)))), len(pool_subjects) - 1)
        chosen_subjects = rng.choice(pool_subjects, size=count, replace=False)
        proxy = np.sort(train_index[np.isin(subjects[train_index], chosen_subjects)])
        return proxy, np.setdiff1d(train_index, proxy)
    chosen = []
    for label in np.unique(labels[train_index]):
        rows = train_index[labels[train_index] == label]
        chosen.append(rng.choice(rows, size=max(1, int(round(fraction * len(rows)))), replace=False))
    proxy = np.sort(np.concatenate(chosen))
    return proxy, np.setdiff1d(train_index, proxy)


def label_draw(count: int, fraction: float, seed: int, client: int) -> np.ndarray:
    """Which of a client's ``count`` samples keep their label: a seeded ``fraction`` (at least one)."""
    keep = np.zeros(count, dtype=bool)
    if count:
        keep[rng_for(seed, "labels", client).permutation(count)[: max(1, int(round(fraction * count)))]] = True
    return keep


def masked_arrays(
    prepared: PreparedData, index: np.ndarray, presence: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-modality arrays of the given samples with every absent modality zeroed."""
    return {
        name: prepared.dataset.modalities[name][index] * presence[:, m].reshape(-1, *[1] * (array.ndim - 1))
        for m, (name, array) in enumerate(prepared.dataset.modalities.items())
    }


def split_tensors(prepared: PreparedData, split: str, device: str, complete: bool = False) -> TensorData:
    """A prepared split as the data has it: each sample with the modalities it has (evaluation data).

    ``complete`` keeps only the samples that have every modality.
    """
    index = prepared.indices(split)
    presence = prepared.dataset.presence[index]
    if complete:
        index, presence = index[presence.all(axis=1)], presence[presence.all(axis=1)]
    return TensorData.from_numpy(
        masked_arrays(prepared, index, presence), presence, prepared.dataset.labels[index], device
    )


def client_inputs(
    modalities: dict[str, np.ndarray], labels: np.ndarray, presence: np.ndarray, labelled: np.ndarray, client: int,
    corruption: CorruptionPlan, num_classes: int,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A client's training inputs from its kept samples: absent values zeroed, corruption applied, hidden labels."""
    masked = {
        name: array * presence[:, m].reshape(-1, *[1] * (array.ndim - 1))
        for m, (name, array) in enumerate(modalities.items())
    }
    inputs, labels = corruption.corrupt_data(client, masked, labels, num_classes)
    return inputs, presence, np.where(labelled, labels, UNLABELLED)


def client_arrays(
    prepared: PreparedData, federated: FederatedData, client: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A client's training inputs (masked values zeroed, corruption applied), presence mask and labels."""
    rows = federated.client_rows(client)
    index = federated.pool_index[rows]
    return client_inputs(
        {name: array[index] for name, array in prepared.dataset.modalities.items()}, prepared.dataset.labels[index],
        federated.presence[rows], federated.labelled[rows], client, federated.corruption, prepared.dataset.num_classes,
    )


def site_arrays(
    modalities: dict[str, np.ndarray], labels: np.ndarray, client: int, num_clients: int, mask: MaskConfig,
    label_fraction: float, corruption: CorruptionPlan, seed: int, num_classes: int,
    data_presence: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """What :func:`client_arrays` gives client ``client``, computed at the site from its own samples alone.

    ``modalities`` (in the federation's modality order) and ``labels`` are the site's samples,
    unmasked, in the order the partition listed them; ``data_presence`` (n, M) is what the site's own file
    has (all present when None), combined with the simulated mask. The modalities it holds, its per-sample
    mask, which labels it keeps and its corruption come from the same seeded streams as
    :func:`partition_and_mask` draws them from, so no mask ever has to leave the server.
    """
    masker = ModalityMasker(list(modalities), mask, seed)
    held = masker.client_modalities(num_clients)[client]
    presence = masker.mask_client(client, len(labels), held).presence
    if data_presence is not None:
        presence = presence & data_presence
    kept = presence.any(axis=1)
    return client_inputs(
        {name: array[kept] for name, array in modalities.items()}, labels[kept], presence[kept],
        label_draw(int(kept.sum()), label_fraction, seed, client), client, corruption, num_classes,
    )


def held_out_presence(mask: MaskConfig, modalities: list[str], num_samples: int, seed: int) -> np.ndarray:
    """Presence (n, M) of held-out samples under the training mask: what the model meets at inference.

    Each sample takes the modality set of a client group (drawn by the groups' fractions),
    then that group's per-sample missingness; samples left with no modality stay all-absent
    (callers drop them).
    """
    masker = ModalityMasker(modalities, mask, seed)
    groups = [np.isin(modalities, g.modalities) for g in mask.client_modalities] or [np.ones(len(modalities), bool)]
    fractions = [g.fraction for g in mask.client_modalities] or [1.0]
    choice = rng_for(seed, "mask", "held-out-groups").choice(len(groups), size=num_samples, p=fractions)
    presence = np.zeros((num_samples, len(modalities)), dtype=bool)
    for g, held in enumerate(groups):
        rows = np.flatnonzero(choice == g)
        presence[rows] = masker.mask_client(f"held-out-{g}", len(rows), held).presence
    return presence


def proxy_arrays(
    prepared: PreparedData, federated: FederatedData
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The server's proxy set: inputs with the modalities each sample has, presence mask and labels."""
    index = federated.proxy_index
    presence = prepared.dataset.presence[index]
    return masked_arrays(prepared, index, presence), presence, prepared.dataset.labels[index]
