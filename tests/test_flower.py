"""Real federation over Flower: SuperLink and SuperNode processes on loopback, the same strategies.

The Flower runtime lives in its own virtual environment (``make install-site``); these tests
drive it from the pipeline's environment as the training stage does.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, TINY

from fedmm.artifacts import read_npz, write_npz
from fedmm.config import load_config
from fedmm.data.corruption import CorruptionPlan
from fedmm.data.dataset import load_npz
from fedmm.data.federated import client_arrays, partition_and_mask, site_arrays
from fedmm.data.prepare import prepare
from fedmm.fl.bundle import TIMINGS_FILE
from fedmm.fl.codec import decode, encode
from fedmm.fl.deploy import Federation, Runtime, SiteSpec, make_certificates
from fedmm.fl.federation import FederationError, loopback_sites
from fedmm.fl.fedmekt import EmbeddingPayload
from fedmm.fl.fedmobile import FedMobileUpdate
from fedmm.fl.messages import ClientUpdate
from fedmm.fl.mmfed3 import DistillationUpdate
from fedmm.fl.pki import make_node_key
from fedmm.fl.training import train
from fedmm.moments import Moments
from fedmm.report import summary_dir
from fedmm.runtime import state_dir

SITE_PYTHON = REPO / ".venv-site" / "bin" / "python"
STRATEGIES = ["fedavg", "fedprox", "moon", "fedmobile", "fedmekt", "mmfed3"]
# Three IID clients and a proxy set for every strategy, so one federation's sites serve all six.
# Sites train their clients one at a time: the bit-identical in-process reference is the loop engine.
OVERRIDES = ["partition.scheme=iid", "partition.num_clients=3", "partition.proxy_fraction=0.1",
             "train.centralized=false", "flower.validate_sites=false", "train.engine=loop"]


def tiny(*overrides: str):
    return load_config(TINY, [*OVERRIDES, *overrides])


def our_processes(home: Path, runtime: str = "flower") -> list[int]:
    """Live processes started with this FEDMM_HOME's Flower runtime folder ``runtime`` (and their descendants)."""
    return Runtime(REPO / ".venv-site", home / runtime).live_processes()


def in_process(config, data, workdir: Path):
    """The reference: the in-process engine with one torch thread, as each site runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.flower.threads_per_site)
    try:
        return train(config, *data, workdir=workdir)
    finally:
        torch.set_num_threads(threads)


def assert_identical(a, b) -> None:
    assert a.history == b.history
    for states in ((a.state, b.state), (a.server_state, b.server_state)):
        assert list(states[0]) == list(states[1])
        for name in states[0]:
            torch.testing.assert_close(states[0][name], states[1][name], rtol=0, atol=0)
    rounds_a, rounds_b = sorted(Path(a.updates_dir).glob("round_*.npz")), sorted(Path(b.updates_dir).glob("round_*.npz"))
    assert [p.name for p in rounds_a] == [p.name for p in rounds_b]
    for pa, pb in zip(rounds_a, rounds_b):
        xa, xb = read_npz(pa), read_npz(pb)
        assert all(np.array_equal(xa[k], xb[k]) for k in xa)


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


def test_fedmmkt_over_flower_equals_the_in_process_run(tmp_path):
    """FedMMKT (tiny generator, 3 mfeat sites, 2 rounds) over real SuperNodes equals the loop engine bit for bit.

    Each site's file holds ``pix`` as UCI ships it (16x15 pixel averages): the site squares it by the run's
    ``data.square_images`` with the code that squared the coordinator's data.
    """
    from mmkt_support import tiny_config

    from fedmm.mmkt.federation import federation_config

    def config_with(*overrides: str):
        cell = tiny_config()
        return federation_config(cell.model_copy(update={"set": [*cell.set, "train.rounds=2", *overrides]}))

    config = config_with()
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed, config.corruption)
    as_shipped = prepare(config.data.model_copy(update={"square_images": False}), config.seed)
    sites = loopback_sites(as_shipped, federated, tmp_path / "sites", node_auth=False)
    assert load_npz(sites[0].data_path).modalities["pix"].shape[1] == 240
    reference = in_process(config, (prepared, federated), tmp_path / "inprocess")
    with Federation(Runtime(REPO / ".venv-site", state_dir() / "flower-mmkt"), sites) as running:
        flower = config_with("train.transport=flower", f"flower.superlink={running.address}", "flower.insecure=true",
                             "flower.validate_sites=false")
        over_flower = train(flower, prepared, federated, workdir=tmp_path / "flower")
    assert_identical(reference, over_flower)
    assert {key.split("/")[0] for key in over_flower.server_state} == {"generator", "optimizer", "finetune_losses"}
    assert our_processes(state_dir(), "flower-mmkt") == []


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


def test_a_refused_site_is_named_and_left_out(tmp_path, capfd):
    """A site whose data fails validation is named on the console and trains nothing; the timings count the
    clients that replied. (A site killed mid-run is dropped and named in tests/test_deploy.py.)"""
    overrides = ["partition.scheme=iid", "partition.num_clients=4", "train.centralized=false", "train.rounds=1",
                 "train.transport=flower", "flower.min_clients=2"]
    config = load_config(TINY, overrides)
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    sites = loopback_sites(prepared, federated, tmp_path / "sites", node_auth=False)
    broken = read_npz(sites[3].data_path)
    broken["modality/acc"][:5] = np.nan
    write_npz(sites[3].data_path, broken)
    with Federation(Runtime(REPO / ".venv-site", state_dir() / "flower"), sites) as running:
        config = load_config(TINY, [*overrides, f"flower.superlink={running.address}", "flower.insecure=true"])
        result = train(config, prepared, federated, workdir=tmp_path / "run")
    assert [r.dropped for r in result.history] == [[3]]
    assert [sorted(c.client for c in r.clients) for r in result.history] == [[0, 1, 2]]
    err = capfd.readouterr().err
    assert "refused site 3: its data failed validation" in err and "acc_nonfinite" in err
    timings = json.loads((tmp_path / "run" / TIMINGS_FILE).read_text())
    assert [(t["clients"], t["dropped"]) for t in timings] == [(3, [3])]
    sites_report = json.loads((tmp_path / "run" / "sites.json").read_text())
    assert list(sites_report["refused"]) == ["3"]
    assert sites_report["sites"]["0"]["validation"]["success"] is True
    assert our_processes(state_dir()) == []


def test_below_min_clients_the_run_fails_and_keeps_its_checkpoint(federation, tmp_path):
    running, data = federation
    config = tiny("train.transport=flower", f"flower.superlink={running.address}", "flower.insecure=true",
                  "flower.min_clients=3", "flower.round_timeout=0.01")
    with pytest.raises(FederationError, match=r"round 1: [0-2] of 3 selected clients replied.*min_clients is 3"):
        train(config, *data, workdir=tmp_path / "run")


def test_tls_with_node_auth_refuses_an_unregistered_node(tmp_path):
    config = tiny()
    prepared = prepare(config.data, config.seed)
    federated = partition_and_mask(prepared, config.partition, config.mask, config.seed)
    home = state_dir() / "flower-auth"
    sites = loopback_sites(prepared, federated, tmp_path / "sites", node_auth=True)
    intruder = SiteSpec(2, sites[2].data_path, sites[2].state_dir, make_node_key(tmp_path / "rogue", "rogue")[0])
    with Federation(Runtime(REPO / ".venv-site", home), sites[:2], make_certificates(tmp_path / "tls"),
                    node_auth=True) as running:
        running.start_sites([intruder], timeout=30)
        rogue = running.processes["supernode-2"]
        rogue.wait(60)
        listed = subprocess.run([running.runtime.command("flwr"), "supernode", "list", "fedmm", "--format", "json"],
                                env=running.runtime.env(), capture_output=True, text=True, timeout=60)
    assert rogue.returncode != 0
    assert "Failed to activate SuperNode" in (home / "logs" / "supernode-2.log").read_text()
    nodes = json.loads(listed.stdout)["nodes"]
    assert len(nodes) == 2 and all(node["status"] == "online" for node in nodes)
    assert our_processes(state_dir(), "flower-auth") == []


# ----------------------------------------------------------------------------- the pipeline, as a user runs it


def test_fedmm_run_over_flower_registers_and_leaves_no_process(tmp_path):
    from fedmm.cli import main

    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=tmp_path):
        os.symlink(REPO / ".venv-site", ".venv-site")
        result = runner.invoke(main, ["run", "--config", str(TINY), *[f"--set={o}" for o in OVERRIDES],
                                      "--set", "train.transport=flower", "--set", "registry.model_name=fedmm-flower"],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        summary = json.loads((summary_dir() / "summary.json").read_text())
    assert summary["transport"] == "flower" and "champion" in summary["aliases"]
    assert "insecure (no TLS, no node authentication): loopback 127.0.0.1 only" in result.output
    assert our_processes(state_dir()) == []


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


def test_every_process_of_a_run_over_flower_dies_with_it_under_kill_9(tmp_path):
    """kill -9 of the training process mid-run leaves no SuperLink, SuperNode, executor, ``flwr run`` or ServerApp."""
    home = tmp_path / "home"
    code = ("import sys; from fedmm.config import load_config; from fedmm.data.prepare import prepare;"
            "from fedmm.data.federated import partition_and_mask; from fedmm.fl.training import train;"
            "config = load_config(sys.argv[1], sys.argv[2:]); prepared = prepare(config.data, config.seed);"
            "federated = partition_and_mask(prepared, config.partition, config.mask, config.seed);"
            "train(config, prepared, federated, on_round=lambda r: print('round', r.round, flush=True))")
    run = subprocess.Popen([REPO / ".venv" / "bin" / "python", "-c", code, TINY, *OVERRIDES, "train.rounds=3",
                            "train.transport=flower"], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "FEDMM_HOME": str(home), "PYTHONPATH": str(REPO)})
    try:
        assert run.stdout.readline().strip() == "round 1"
        assert len(our_processes(home)) >= 6  # SuperLink, SuperExec, ServerApp, flwr run, SuperNodes, executors
    finally:
        run.kill()
        run.wait()
        run.stdout.close()
    deadline = time.monotonic() + 20
    while our_processes(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in our_processes(home)} == {}
