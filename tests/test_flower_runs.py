"""Runs over Flower that start federations of their own: FedMMKT's sites, a refused site, TLS with node
authentication, ``fedmm run`` as a user runs it, and kill -9 of the training process.

The module beside it, ``test_flower.py``, shares one federation between its tests; these need their own.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import REPO, TINY
from flower_support import OVERRIDES, assert_identical, in_process, our_processes, tiny

from fedmm.artifacts import read_npz, write_npz
from fedmm.config import load_config
from fedmm.data.dataset import load_npz
from fedmm.data.federated import partition_and_mask
from fedmm.data.prepare import prepare
from fedmm.fl.bundle import TIMINGS_FILE
from fedmm.fl.deploy import Federation, Runtime, SiteSpec, make_certificates
from fedmm.fl.federation import loopback_sites
from fedmm.fl.pki import make_node_key
from fedmm.fl.training import train
from fedmm.report import summary_dir
from fedmm.runtime import state_dir


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
