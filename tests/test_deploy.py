"""A deployed federation across hosts: network namespaces with private disks, TLS, node authentication.

A SuperLink host, a coordinator and three sites, each in its own network and mount
namespace (:mod:`netns_support`), share nothing but the network. The coordinator makes the
PKI (``fedmm pki``) and hands each party only its part; the SuperLink runs ``fedmm superlink``,
the sites ``fedmm site`` with their own file and key, the coordinator its deployed training
with its own evaluation data. Needs root (``ip netns``), as CI has.
"""

import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY
from netns_support import SUPERLINK_OPERATOR, SUPERLINK_PUBLIC, Hosts

from fedmm.artifacts import read_npz
from fedmm.config import load_config
from fedmm.fl import pki
from fedmm.fl.deployed import CoordinatorData, export_sites, in_process_reference

SITES = 3
SITE_FEDMM = str(REPO / ".venv-site" / "bin" / "fedmm")
SITE_PYTHON = str(REPO / ".venv-site" / "bin" / "python")
OVERRIDES = ["partition.scheme=iid", f"partition.num_clients={SITES}", "train.centralized=false", "train.rounds=2"]


def deployed(hosts: Hosts) -> list[str]:
    private = hosts.private
    return [*OVERRIDES, f"flower.num_sites={SITES}", f"flower.superlink={SUPERLINK_OPERATOR}:{pki.OPERATOR_PORT}",
            f"flower.root_certificates={private / 'pki/coordinator/ca.pem'}", "flower.round_timeout=20",
            f"flower.superexec_secret={private / 'pki/coordinator/superexec.secret'}", "flower.min_clients=2"]


def env(hosts: Hosts, party: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "FEDMM_HOME": str(hosts.private / "home"),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "FLWR_HOME": str(hosts.private / "flwr"), **extra}


def tree(hosts: Hosts, party: str, folder: str) -> dict[str, bytes]:
    """A folder of the party's private disk, as ``{relative path: bytes}``."""
    done = subprocess.run(hosts.command(party, ["tar", "-c", "-C", hosts.private, folder]), capture_output=True,
                          check=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def wait_for(path: Path, text: str, timeout: float, process: subprocess.Popen | None = None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path.name} within {timeout} s:\n{path.read_text() if path.exists() else ''}")


def start_site(hosts: Hosts, k: int, logs: Path) -> subprocess.Popen:
    key = hosts.private / "key" / f"site_{k}"
    return hosts.start(f"site{k}", [SITE_FEDMM, "site", "--data", hosts.private / f"site_{k}.npz", "--partition-id", k,
                                    "--superlink", f"{SUPERLINK_PUBLIC}:{pki.FLEET_PORT}", "--root-certificates",
                                    hosts.private / "key" / "ca.pem", "--auth-key", key],
                       logs / f"site{k}.log", env(hosts, f"site{k}"))


def coordinator(hosts: Hosts, name: str, logs: Path) -> subprocess.Popen:
    private = hosts.private
    args = [REPO / ".venv" / "bin" / "python", REPO / "tests" / "deploy_coordinator.py", private / name,
            private / f"{name}.npz", private / "validation.npz", private / "test.npz", *deployed(hosts)]
    return hosts.start("coordinator", args, logs / f"{name}.log", env(hosts, "coordinator"))


def test_a_deployed_run_across_hosts_shares_nothing_but_the_network(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    config = load_config(TINY, OVERRIDES)
    exported = export_sites(config, tmp_path / "stage" / "export")
    with Hosts(tmp_path, SITES) as hosts:
        made = hosts.run("coordinator", [SITE_FEDMM, "pki", "init", "--dir", hosts.private / "pki", "--superlink-host",
                                         SUPERLINK_PUBLIC, "--operator-host", SUPERLINK_OPERATOR, "--sites", SITES],
                         env=env(hosts, "coordinator"))
        assert made.returncode == 0, made.stderr
        material = tree(hosts, "coordinator", "pki")
        hosts.put("superlink", {k: v for k, v in material.items() if k.startswith(("pki/superlink/", "pki/pki.json"))})
        for k in range(SITES):
            prefix = f"pki/sites/site_{k}/"
            hosts.put(f"site{k}", {**{"key/" + n.removeprefix(prefix): v for n, v in material.items()
                                      if n.startswith(prefix)}, f"site_{k}.npz": exported["sites"][k]})
        hosts.put("coordinator", {p.name: p for p in exported["coordinator"]})

        superlink = hosts.start("superlink", [SITE_FEDMM, "superlink", "--pki", hosts.private / "pki"],
                                logs / "superlink.log", env(hosts, "superlink"))
        wait_for(logs / "superlink.log", "Control and Runtime APIs on", 90, superlink)
        operator = env(hosts, "coordinator", FLWR_HOME=str(hosts.private / "pki" / "coordinator" / "flwr"))
        for k in range(SITES):
            done = hosts.run("coordinator", [REPO / ".venv-site" / "bin" / "flwr", "supernode", "register",
                                             hosts.private / "pki" / "coordinator" / "keys" / f"site_{k}.pub", "fedmm"],
                             env=operator)
            assert done.returncode == 0, done.stdout + done.stderr
        sites = {k: start_site(hosts, k, logs) for k in range(SITES)}
        for k in range(SITES):
            wait_for(logs / f"site{k}.log", "connected to", 90, sites[k])

        # A site killed mid-run is dropped and named; the run goes on with the others.
        first = coordinator(hosts, "first", logs)
        wait_for(logs / "first.log", "round 1", 240, first)
        hosts.kill("site2")
        assert first.wait(240) == 0, (logs / "first.log").read_text()
        assert "dropped site 2 in round 2: no reply within flower.round_timeout=20 s" in (logs / "first.log").read_text()
        assert json.loads(hosts.get("coordinator", "first.json"))["clients"] == [[0, 1, 2], [0, 1]]

        # The restarted site waits until the SuperLink lets its crashed node go, and says so.
        sites[2] = start_site(hosts, 2, logs)
        check_the_control_api_is_out_of_a_sites_reach(hosts, logs)
        site2 = wait_for(logs / "site2.log", "connected to", 120, sites[2])
        assert "retrying every 5 s until it is released" in site2

        # It rejoins the next run, and the run equals the in-process engine on the same files and seeds.
        second = coordinator(hosts, "second", logs)
        assert second.wait(300) == 0, (logs / "second.log").read_text()
        assert json.loads(hosts.get("coordinator", "second.json"))["clients"] == [[0, 1, 2], [0, 1, 2]]
        (tmp_path / "second.npz").write_bytes(hosts.get("coordinator", "second.npz"))
        for k in (0, 1):
            assert "round 2 trained" in (logs / f"site{k}.log").read_text()
        data = CoordinatorData.load(*exported["coordinator"])
        torch.set_num_threads(1)
        reference = in_process_reference(load_config(TINY, deployed(hosts)), data, exported["sites"], tmp_path / "ref")
        deployed_state = read_npz(tmp_path / "second.npz")
        assert sorted(deployed_state) == sorted(reference.state)
        for name, value in reference.state.items():
            assert np.array_equal(deployed_state[name], value.numpy()), name
        namespaces = [hosts.ns(p) for p in hosts.parties]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in namespaces)


def check_the_control_api_is_out_of_a_sites_reach(hosts: Hosts, logs: Path) -> None:
    """From a site host holding the CA: no key registration, no run listing, no operator address; a rogue key is refused."""
    private = hosts.private
    rogue = ("from pathlib import Path; from fedmm.fl import pki; import sys;"
             "pki.make_node_key(Path(sys.argv[1]), 'rogue');"
             "pki.write_connection(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))")
    hosts.run("site0", [SITE_PYTHON, "-c", rogue, private / "rogue", private / "flwr",
                        f"{SUPERLINK_PUBLIC}:{pki.FLEET_PORT}", private / "key" / "ca.pem"], env=env(hosts, "site0"))
    flwr = REPO / ".venv-site" / "bin" / "flwr"
    register = hosts.run("site0", [flwr, "supernode", "register", private / "rogue" / "rogue.pub", "fedmm"],
                         env=env(hosts, "site0"))
    listing = hosts.run("site0", [flwr, "ls", "fedmm"], env=env(hosts, "site0"))
    for attempt in (register, listing):
        assert attempt.returncode != 0 and "registered successfully" not in attempt.stdout, attempt.stdout
    probe = ("import socket, sys; s = socket.socket(); s.settimeout(3);"
             "sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)")
    assert hosts.run("site0", [SITE_PYTHON, "-c", probe, SUPERLINK_OPERATOR, pki.OPERATOR_PORT]).returncode == 1
    refused = hosts.run("site0", [SITE_FEDMM, "site", "--data", private / "site_0.npz", "--partition-id", 0,
                                  "--superlink", f"{SUPERLINK_PUBLIC}:{pki.FLEET_PORT}", "--root-certificates",
                                  private / "key" / "ca.pem", "--auth-key", private / "rogue" / "rogue",
                                  "--state-dir", private / "rogue-state"], env=env(hosts, "site0"), timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "error: refused by 10.77.0.1:9092" in refused.stderr and "Traceback" not in refused.stderr
