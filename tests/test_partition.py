import numpy as np
import pytest

from fedmm.config import PartitionConfig
from fedmm.data.partition import (
    DirichletPartitioner,
    IidPartitioner,
    NaturalPartitioner,
    PartitionError,
    QuantitySkewPartitioner,
    make_partitioner,
)

rng = np.random.default_rng(0)
LABELS = rng.integers(0, 7, size=3000)
SUBJECTS = rng.integers(1, 11, size=3000)


@pytest.mark.parametrize(
    "partitioner",
    [
        NaturalPartitioner(None, 0),
        IidPartitioner(10, 0),
        DirichletPartitioner(10, 0, alpha=0.3, min_samples=10),
        QuantitySkewPartitioner(10, 0, alpha=0.5, min_samples=10),
    ],
    ids=["natural", "iid", "dirichlet", "quantity"],
)
def test_partitions_are_disjoint_and_complete(partitioner):
    partitioner.fit(LABELS, SUBJECTS)
    parts = [partitioner.load_partition(i) for i in range(partitioner.num_partitions)]
    everything = np.concatenate(parts)
    assert len(everything) == len(LABELS)
    assert len(np.unique(everything)) == len(LABELS)
    assert partitioner.num_partitions == 10


def test_natural_partition_is_one_client_per_subject():
    partitioner = NaturalPartitioner(None, 0).fit(LABELS, SUBJECTS)
    for client in range(partitioner.num_partitions):
        assert len(np.unique(SUBJECTS[partitioner.load_partition(client)])) == 1


def _label_skew(partitioner) -> float:
    """Mean total-variation distance between client label distributions and the global one."""
    partitioner.fit(LABELS, SUBJECTS)
    overall = np.bincount(LABELS, minlength=7) / len(LABELS)
    distances = []
    for client in range(partitioner.num_partitions):
        counts = np.bincount(LABELS[partitioner.load_partition(client)], minlength=7)
        distances.append(0.5 * np.abs(counts / counts.sum() - overall).sum())
    return float(np.mean(distances))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    iid = _label_skew(IidPartitioner(10, 0))
    mild = _label_skew(DirichletPartitioner(10, 0, alpha=10.0, min_samples=10))
    strong = _label_skew(DirichletPartitioner(10, 0, alpha=0.1, min_samples=10))
    assert iid < 0.1
    assert mild < strong
    assert strong > 0.4


def test_quantity_skew_varies_sizes_but_not_labels():
    partitioner = QuantitySkewPartitioner(10, 0, alpha=0.5, min_samples=20).fit(LABELS, SUBJECTS)
    sizes = np.bincount(partitioner.assignment, minlength=10)
    assert sizes.min() >= 20
    assert sizes.max() > 3 * sizes.min()


def test_partitions_are_seeded_and_set_once():
    a = DirichletPartitioner(10, 5, alpha=0.5, min_samples=10).fit(LABELS, SUBJECTS).assignment
    b = DirichletPartitioner(10, 5, alpha=0.5, min_samples=10).fit(LABELS, SUBJECTS).assignment
    c = DirichletPartitioner(10, 6, alpha=0.5, min_samples=10).fit(LABELS, SUBJECTS).assignment
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    with pytest.raises(PartitionError, match="set once"):
        IidPartitioner(3, 0).fit(LABELS, SUBJECTS).fit(LABELS, SUBJECTS)


def test_impossible_partitions_are_clear_errors():
    with pytest.raises(PartitionError, match="raise alpha or lower num_clients"):
        DirichletPartitioner(200, 0, alpha=0.01, min_samples=10, max_attempts=3).fit(LABELS, SUBJECTS)
    with pytest.raises(PartitionError, match="cannot give"):
        QuantitySkewPartitioner(10, 0, alpha=1, min_samples=400).fit(LABELS, SUBJECTS)
    with pytest.raises(PartitionError, match="at least 2 subjects"):
        NaturalPartitioner(None, 0).fit(LABELS, np.zeros_like(SUBJECTS))


def test_make_partitioner_follows_config():
    assert isinstance(make_partitioner(PartitionConfig(), 0), NaturalPartitioner)
    partitioner = make_partitioner(PartitionConfig(scheme="dirichlet", num_clients=4, alpha=2.0), 0)
    assert isinstance(partitioner, DirichletPartitioner) and partitioner.alpha == 2.0


def test_clients_that_masking_shrinks_below_min_samples_are_refused(tmp_path):
    from conftest import write_synthetic_npz

    from fedmm.config import DataConfig, MaskConfig
    from fedmm.data.federated import partition_and_mask
    from fedmm.data.partition import PartitionError
    from fedmm.data.prepare import prepare

    path = write_synthetic_npz(tmp_path / "data.npz", n_recordings=80, windows_per_recording=1)
    prepared = prepare(DataConfig(source="npz", path=str(path)), seed=0)
    partition = PartitionConfig(scheme="dirichlet", num_clients=3, alpha=0.5, min_samples=10)
    complete = partition_and_mask(prepared, partition, MaskConfig(), seed=0)
    assert min(row.n_samples for row in complete.report.clients) >= 10
    with pytest.raises(PartitionError, match=r"under the mask, client 0 keeps \d of \d+.* partition.min_samples=10"):
        partition_and_mask(prepared, partition, MaskConfig(missing_rate={"acc": 0.5, "gyro": 0.5}), seed=0)
