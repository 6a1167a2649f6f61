"""Real federation over Flower: SuperLink and SuperNode processes on loopback, the same strategies.

These tests share one federation; `test_flower_runs.py` holds those that start their own.
The Flower runtime lives in its own virtual environment (``make install-site``); these tests
drive it from the pipeline's environment as the training stage does.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY
from flower_support import SITE_PYTHON, STRATEGIES, assert_identical, in_process, our_processes, tiny

from fedmm.config import load_config
from fedmm.data.corruption import CorruptionPlan
from fedmm.data.dataset import load_npz
from fedmm.data.federated import client_arrays, partition_and_mask, site_arrays
from fedmm.data.prepare import prepare
from fedmm.fl.codec import decode, encode
from fedmm.fl.deploy import Federation, Runtime
from fedmm.fl.federation import FederationError, loopback_sites
from fedmm.fl.fedmekt import EmbeddingPayload
from fedmm.fl.fedmobile import FedMobileUpdate
from fedmm.fl.messages import ClientUpdate
from fedmm.fl.mmfed3 import DistillationUpdate
from fedmm.fl.training import train
from fedmm.moments import Moments
from fedmm.runtime import state_dir

# ----------------------------------------------------------------------------- no processes


def test_payloads_survive_the_codec_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    delta = {"a.weight": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g)}
    moments = (Moments.of(np.arange(6.0).reshape(3, 2), np.array([True, False, True])),)
    payloads = [
        ClientUpdate(1, 10, delta, {"train_loss": 0.5}),
        FedMobileUpdate(2, 7, delta, {}, generator={"w": torch.ones(2)}, generator_examples=5, moments=moments,
                        loss_before=1.25, loss_after=0.75, local_accuracy=0.5),
        FedMobileUpdate(3, 7, delta, generator={}),
        DistillationUpdate(client_id=4, num_examples=3, delta=delta, proxy_logits=torch.randn(5, 3, generator=g),
                           proxy_features=torch.randn(5, 2, generator=g)),
        EmbeddingPayload(5, 9, torch.randn(5, 2, 4, generator=g), torch.tensor([True, False])),
    ]
    classes = (ClientUpdate, FedMobileUpdate, DistillationUpdate, EmbeddingPayload)
    for payload in payloads:
        back = decode(*encode(payload), classes)
        assert type(back) is type(payload)
        for name, value in vars(payload).items():
            other = getattr(back, name)
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other) and value.dtype == other.dtype
            elif isinstance(value, dict) and value and isinstance(next(iter(value.values())), torch.Tensor):
                assert list(value) == list(other) and all(torch.equal(value[k], other[k]) for k in value)
            elif isinstance(value, tuple):
                assert all(np.array_equal(getattr(m, f), getattr(n, f)) for m, n in zip(value, other)
                           for f in ("count", "total", "squares", "low", "high"))
            else:
                assert value == other
    with pytest.raises(ValueError, match="unexpected payload class"):
        decode(*encode(payloads[1]), (ClientUpdate,))


def test_a_site_draws_its_own_mask_labels_and_corruption_like_the_partition(tmp_path):
    config = load_config(TINY, [
        "partition.scheme=iid", "partition.num_clients=4", "partition.label_fraction=0.5",
        "mask.client_modalities=[{modalities: [acc, gyro], fraction: 0.5}, {modalities: [acc], fraction: 0.5}]",
        "mask.missing_rate={acc: 0.3}",
        "corruption.clients=[{client: 1, kind: label_flip, fraction: 0.5}, {client: 2, kind: feature_noise}]",
    ])
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)
    for site in loopback_sites(prepared, federated, tmp_path, node_auth=False):
        own = load_npz(site.data_path)
        assert len(own) == int((federated.client == site.client_id).sum())
        at_site = site_arrays(
            {m: own.modalities[m] for m in federated.modalities}, own.labels, site.client_id, federated.num_clients,
            config.mask, config.partition.label_fraction, CorruptionPlan(config.corruption, config.seed),
            config.seed, prepared.dataset.num_classes,
        )
        central = client_arrays(prepared, federated, site.client_id)
        for a, b in zip(at_site[1:], central[1:]):
            assert np.array_equal(a, b)
        assert all(np.array_equal(at_site[0][m], central[0][m]) for m in central[0])


def test_the_modules_a_site_imports_load_no_orchestrator_tracking_or_plotting():
    code = (
        "import sys, fedmm.flower.client_app, fedmm.flower.executor, fedmm.flower.server_app, fedmm.cli;"
        "heavy = {'zenml', 'mlflow', 'kfp', 'dvc', 'great_expectations', 'matplotlib'};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    done = subprocess.run([SITE_PYTHON, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    installed = subprocess.run([SITE_PYTHON, "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                               check=True)
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert {"flwr", "torch", "tqdm"} <= names and not names & {"zenml", "mlflow", "kfp", "dvc"}


# ----------------------------------------------------------------------------- one federation, six strategies


@pytest.fixture(scope="module")
def federation():
    """A SuperLink and three site SuperNodes on loopback, joined as separate sites would join.

    It has a runtime folder of its own, so the tests that start federations of their own can
    check that theirs left no process while this one still runs.
    """
    config = tiny()
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    home = state_dir() / "flower-shared"
    sites = loopback_sites(prepared, federated, home / "sites", node_auth=False)
    with Federation(Runtime(REPO / ".venv-site", home), sites) as running:
        yield running, (prepared, federated)
    assert our_processes(state_dir(), "flower-shared") == []


# One strategy per payload type: FedProx and MOON send FedAvg's ClientUpdate, and MOON's run over
# Flower is checked against the in-process one by the killed-ServerApp test below.
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s not in ("fedprox", "moon")])
def test_every_strategy_over_flower_equals_the_in_process_run(federation, strategy, tmp_path):
    running, data = federation
    base = tiny(f"train.strategy={strategy}")
    flower = tiny(f"train.strategy={strategy}", "train.transport=flower", f"flower.superlink={running.address}",
                  "flower.insecure=true")
    reference = in_process(base, data, tmp_path / "inprocess")
    over_flower = train(flower, *data, workdir=tmp_path / "flower")
    assert_identical(reference, over_flower)
    assert all(record.dropped == [] for record in over_flower.history)


def test_a_killed_serverapp_resumes_from_its_checkpoint_and_the_sites_kept_state(federation, tmp_path):
    _, data = federation
    config = tiny("train.strategy=moon", "train.rounds=3", "train.transport=flower")

    def kill_serverapp(record):
        if record.round == 1:
            for pid in our_processes(state_dir()):
                if b"flwr-serverapp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, 9)

    with pytest.raises(FederationError, match="stopped after 1 of 3 rounds .*: the ServerApp process exited"):
        train(config, *data, on_round=kill_serverapp, workdir=tmp_path / "flower")
    resumed = train(config, *data, workdir=tmp_path / "flower")
    assert_identical(in_process(tiny("train.strategy=moon", "train.rounds=3"), data, tmp_path / "ref"), resumed)
    kept = sorted(p.name for p in (tmp_path / "flower" / "flower" / "sites" / "state").rglob("*.npz"))
    assert kept == [f"client_{k}_round_{r:04d}.npz" for k in range(3) for r in (1, 2)]


# ----------------------------------------------------------------------------- faults and security


def test_below_min_clients_the_run_fails_and_keeps_its_checkpoint(federation, tmp_path):
    running, data = federation
    config = tiny("train.transport=flower", f"flower.superlink={running.address}", "flower.insecure=true",
                  "flower.min_clients=3", "flower.round_timeout=0.01")
    with pytest.raises(FederationError, match=r"round 1: [0-2] of 3 selected clients replied.*min_clients is 3"):
        train(config, *data, workdir=tmp_path / "run")


# ----------------------------------------------------------------------------- a site, without processes


def test_a_site_keeps_what_a_rerun_round_needs(tmp_path):
    from fedmm.fl.site import KeptFiles

    store = KeptFiles(tmp_path, client_id=4)
    for server_round in range(3):
        store.save(server_round, {"w": torch.full((2,), float(server_round))})
    assert store.load(0, "cpu") is None
    assert torch.equal(store.load(2, "cpu")["w"], torch.ones(2))  # round 2 rerun after a restart: round 1's state
    assert torch.equal(store.load(3, "cpu")["w"], torch.full((2,), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client_4_round_0001.npz", "client_4_round_0002.npz"]


def test_a_site_refuses_an_insecure_connection_beyond_loopback(tmp_path):
    site_file = tmp_path / "site.npz"
    site_file.write_bytes(b"")
    done = subprocess.run(
        [REPO / ".venv-site" / "bin" / "fedmm", "site", "--data", site_file, "--partition-id", "0",
         "--superlink", "10.1.2.3:9092", "--insecure"],
        capture_output=True, text=True, env={**os.environ, "FEDMM_HOME": str(tmp_path / "home")}, timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --insecure is allowed only on loopback, not '10.1.2.3:9092': give --root-certificates"]


