"""A deployed federation across hosts: network namespaces with private disks, TLS, node authentication.

A SuperLink host, a coordinator and three sites, each in its own network and mount
namespace (:mod:`netns_support`), share nothing but the network. The coordinator makes the
PKI (``fedmm pki``) and hands each party only its part; the SuperLink runs ``fedmm superlink``,
the sites ``fedmm site`` with their own file and key, the coordinator its deployed training
with its own evaluation data. Needs root (``ip netns``), as CI has.
"""

import json
import os
import subprocess

import numpy as np
import pytest
import torch
from conftest import REPO, TINY
from netns_support import SUPERLINK_OPERATOR, SUPERLINK_PUBLIC, Deployment, Hosts, wait_for

from fedmm.artifacts import read_npz
from fedmm.config import load_config
from fedmm.data.dataset import load_npz
from fedmm.fl import pki
from fedmm.fl.bundle import SITES_FILE, TIMINGS_FILE
from fedmm.fl.deployed import CoordinatorData, deployed_run, export_sites, in_process_reference
from fedmm.fl.engine import CHECKPOINT_FILE

SITES = 3
SITE_FEDMM = str(REPO / ".venv-site" / "bin" / "fedmm")
SITE_PYTHON = str(REPO / ".venv-site" / "bin" / "python")
OVERRIDES = ["partition.scheme=iid", f"partition.num_clients={SITES}", "train.centralized=false", "train.rounds=2"]
RUN = [*OVERRIDES, "flower.round_timeout=20", "flower.min_clients=2"]


def test_a_deployed_run_across_hosts_shares_nothing_but_the_network(tmp_path):
    logs = tmp_path / "logs"
    exported = export_sites(load_config(TINY, OVERRIDES), tmp_path / "stage" / "export")
    with Hosts(tmp_path, SITES) as hosts:
        deployment = Deployment(hosts, REPO, logs, exported["sites"], exported["coordinator"])
        deployment.start()

        # A site killed mid-run is dropped and named; the run goes on with the others.
        first = deployment.coordinator("first", RUN)
        wait_for(logs / "first.log", "round 1", 240, first)
        hosts.kill("site2")
        assert first.wait(240) == 0, (logs / "first.log").read_text()
        assert "dropped site 2 in round 2: no reply within flower.round_timeout=20 s" in (logs / "first.log").read_text()
        assert deployment.result("first")[1]["clients"] == [[0, 1, 2], [0, 1]]
        timings = json.loads(hosts.get("coordinator", f"first/train/{TIMINGS_FILE}"))
        assert [(t["clients"], t["dropped"]) for t in timings] == [(3, []), (2, [2])]  # the clients that replied

        # The restarted site waits until the SuperLink lets its crashed node go, and says so (its log goes on
        # after the first run's lines: only the restart's count). The next run, `fedmm run` of the deployed
        # graph, starts meanwhile: it passes over the crashed node, waits for the site's new one, and
        # registers and promotes a champion.
        restart = len((logs / "site2.log").read_text())
        deployment.start_site(2)
        second = deployment.pipeline("second", TINY, [*RUN, "registry.model_name=fedmm-deployed"])
        check_the_control_api_is_out_of_a_sites_reach(deployment)
        assert "retrying every 5 s until it is released" in wait_for(logs / "site2.log", "connected to", 120, since=restart)
        assert second.wait(400) == 0, (logs / "second.log").read_text()
        config = load_config(TINY, [*RUN, *deployment.overrides()])
        data = CoordinatorData.from_files(*exported["coordinator"])
        key = deployed_run(config, data)[0].key
        summary = json.loads(hosts.get("coordinator", "home/reports/latest/summary.json"))
        sites = json.loads(hosts.get("coordinator", f"home/deployed/{key}/query/{SITES_FILE}"))
        (tmp_path / "second.npz").write_bytes(hosts.get("coordinator", f"home/deployed/{key}/train/{CHECKPOINT_FILE}"))
        namespaces = [hosts.ns(p) for p in hosts.parties]
    assert summary["promoted"] and "champion" in summary["aliases"] and summary["transport"] == "flower (deployed)"
    assert summary["test_samples"] == len(data.test) and summary["num_clients"] == SITES
    assert_the_sites_sent_only_reports(sites, exported)
    torch.set_num_threads(1)
    reference = in_process_reference(config, data, exported["sites"], tmp_path / "ref")
    checkpoint = read_npz(tmp_path / "second.npz")
    history = json.loads(checkpoint["history"].tobytes())
    assert [sorted(c["client"] for c in record["clients"]) for record in history] == [[0, 1, 2], [0, 1, 2]]
    trained = {name: value for name, value in reference.state.items() if value.is_floating_point()}
    assert set(trained) <= set(checkpoint)
    for name, value in trained.items():
        assert np.array_equal(checkpoint[name], value.numpy()), name
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in namespaces)


def assert_the_sites_sent_only_reports(sites: dict, exported: dict) -> None:
    """The query returned each site's counts, classes, modalities, file hash and verdict (``sites.json``), nothing else."""
    assert sorted(sites["sites"]) == ["0", "1", "2"] and sites["refused"] == {}
    for k, path in enumerate(exported["sites"]):
        own, report = load_npz(path), sites["sites"][str(k)]
        assert sorted(report) == ["classes", "client_id", "data_sha256", "modalities", "node_id", "samples", "validation"]
        assert report["samples"] == len(own) and sum(report["classes"]) == len(own)
        assert report["modalities"] == {"acc": 1.0, "gyro": 1.0} and report["validation"]["success"]


def check_the_control_api_is_out_of_a_sites_reach(deployment: Deployment) -> None:
    """From a site host holding the CA: no key registration, no run listing, no operator address; a rogue key is refused."""
    hosts, env = deployment.hosts, deployment.env()
    private = hosts.private
    rogue = ("from pathlib import Path; from fedmm.fl import pki; import sys;"
             "pki.make_node_key(Path(sys.argv[1]), 'rogue');"
             "pki.write_connection(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))")
    hosts.run("site0", [SITE_PYTHON, "-c", rogue, private / "rogue", private / "flwr",
                        f"{SUPERLINK_PUBLIC}:{pki.FLEET_PORT}", private / "key" / "ca.pem"], env=env)
    flwr = REPO / ".venv-site" / "bin" / "flwr"
    register = hosts.run("site0", [flwr, "supernode", "register", private / "rogue" / "rogue.pub", "fedmm"],
                         env=env)
    listing = hosts.run("site0", [flwr, "ls", "fedmm"], env=env)
    for attempt in (register, listing):
        assert attempt.returncode != 0 and "registered successfully" not in attempt.stdout, attempt.stdout
    probe = ("import socket, sys; s = socket.socket(); s.settimeout(3);"
             "sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)")
    assert hosts.run("site0", [SITE_PYTHON, "-c", probe, SUPERLINK_OPERATOR, pki.OPERATOR_PORT]).returncode == 1
    refused = hosts.run("site0", [SITE_FEDMM, "site", "--data", private / "site_0.npz", "--partition-id", 0,
                                  "--superlink", f"{SUPERLINK_PUBLIC}:{pki.FLEET_PORT}", "--root-certificates",
                                  private / "key" / "ca.pem", "--auth-key", private / "rogue" / "rogue",
                                  "--state-dir", private / "rogue-state"], env=env, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "error: refused by 10.77.0.1:9092" in refused.stderr and "Traceback" not in refused.stderr


def test_pki_gives_each_party_its_part_and_never_overwrites(tmp_path):
    from click.testing import CliRunner
    from cryptography import x509

    from fedmm.cli import main

    runner = CliRunner()
    done = runner.invoke(main, ["pki", "init", "--dir", str(tmp_path / "pki"), "--superlink-host", "fl.example.org",
                                "--operator-host", "10.0.1.5", "--sites", "2"])
    assert done.exit_code == 0, done.output
    root = tmp_path / "pki"
    server = x509.load_pem_x509_certificate((root / "superlink" / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.1.5", "127.0.0.1"]
    secrets = [root / "operator/ca.key", root / "superlink/server.key", root / "superlink/superexec.secret",
               root / "coordinator/superexec.secret", root / "sites/site_0/site_0", root / "sites/site_1/site_1"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in secrets)
    assert sorted(p.name for p in (root / "sites/site_1").iterdir()) == ["ca.pem", "site_1", "site_1.pub"]
    assert (root / "coordinator/keys/site_1.pub").read_bytes() == (root / "sites/site_1/site_1.pub").read_bytes()
    assert (root / "coordinator/flwr/config.toml").read_text() == (
        f'[superlink.fedmm]\naddress = "10.0.1.5:9093"\nroot-certificates = "{root / "coordinator/ca.pem"}"\n')
    again = runner.invoke(main, ["pki", "init", "--dir", str(root), "--superlink-host", "x", "--sites", "1"])
    assert again.exit_code == 2 and "is not empty" in again.output
    assert runner.invoke(main, ["pki", "add-site", "--dir", str(root), "hospital-c"]).exit_code == 0
    twice = runner.invoke(main, ["pki", "add-site", "--dir", str(root), "hospital-c"])
    assert twice.exit_code == 2 and "already exists" in twice.output
    bad = runner.invoke(main, ["pki", "add-site", "--dir", str(root), "../escape"])
    assert bad.exit_code == 2 and "not allowed" in bad.output
    old = (root / "coordinator/keys/site_0.pub").read_bytes()
    assert runner.invoke(main, ["pki", "rotate-site", "--dir", str(root), "site_0"]).exit_code == 0
    assert (root / "coordinator/keys/site_0.pub.old").read_bytes() == old
    assert (root / "coordinator/keys/site_0.pub").read_bytes() == (root / "sites/site_0/site_0.pub").read_bytes() != old


def test_a_site_checks_its_file_without_connecting(tmp_path):
    from fedmm.artifacts import write_npz

    rng = np.random.default_rng(0)
    arrays = {"modality/acc": rng.normal(size=(12, 3, 8)).astype(np.float32),
              "modality/gyro": rng.normal(size=(12, 3, 8)).astype(np.float32), "labels": np.arange(12) % 3}
    arrays["modality/acc"][:2] = np.nan
    write_npz(tmp_path / "site.npz", arrays)
    env = {**os.environ, "FEDMM_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([SITE_FEDMM, "site", "--check", "--data", tmp_path / "site.npz"], capture_output=True,
                          text=True, env=env, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert lines[:3] == ["site.npz: 12 samples, 3 classes", "classes: class_0 4, class_1 4, class_2 4",
                         "modalities: acc (3, 8) present in 100%, gyro (3, 8) present in 100%"]
    assert lines[3].startswith("validation: FAILED") and "acc_nonfinite" in lines[4]


def test_the_deployed_graph_is_well_formed_and_picked_for_a_deployed_config():
    import inspect

    from fedmm import graph
    from fedmm.config import Config

    deployed_graph = graph.DEPLOYED
    produced: set[str] = set()
    for stage in deployed_graph.stages:
        assert set(stage.inputs) <= produced and stage.output not in produced
        produced.add(stage.output)
        parameters = inspect.signature(deployed_graph.function(stage)).parameters
        assert set(stage.inputs) <= set(parameters), stage.function
        for key in (*stage.reads, *stage.files):
            graph.config_value(Config(), key)
    assert produced == {a.name for a in deployed_graph.artifacts}
    assert "partition" not in deployed_graph.names and deployed_graph.result == "summary"
    flags = ["flower.validation_data=v.npz", "flower.test_data=t.npz", "flower.superlink=10.0.1.5:9093",
             "flower.root_certificates=ca.pem", "flower.superexec_secret=s", "flower.num_sites=3"]
    assert graph.for_config(load_config(TINY, flags)) is deployed_graph
    assert graph.for_config(load_config(TINY, [])) is graph.TRAINING
    with pytest.raises(ValueError, match="also needs flower.superlink, flower.num_sites, flower.superexec_secret"):
        load_config(TINY, flags[:2])


def test_the_kubernetes_manifests_validate_against_the_schema():
    import kubernetes_validate
    import yaml

    documents = [doc for path in sorted((REPO / "infra" / "k8s").glob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert {doc["kind"] for doc in documents} >= {"Deployment", "Service", "NetworkPolicy", "PersistentVolumeClaim"}
    for doc in documents:
        kubernetes_validate.validate(doc, "1.32", strict=True)
    superlink = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "fedmm-superlink")
    assert superlink["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["superlink", "--pki=/pki"]


def test_a_site_holding_a_sample_the_coordinator_keeps_for_test_is_refused(tmp_path):
    from fedmm.artifacts import write_npz
    from fedmm.fl.site import RunSpec, Site, sample_hashes
    from fedmm.models.multimodal import ModelSpec

    rng = np.random.default_rng(1)
    modalities = {"acc": rng.normal(size=(10, 3, 8)).astype(np.float32),
                  "gyro": rng.normal(size=(10, 3, 8)).astype(np.float32)}
    write_npz(tmp_path / "site.npz", {**{f"modality/{m}": a for m, a in modalities.items()}, "labels": np.arange(10) % 2})
    stats = {m: np.stack([np.zeros(3), np.ones(3)]) for m in modalities}
    spec = ModelSpec.build({m: (3, 8) for m in modalities}, 2, load_config(TINY, []).model, stats)
    coordinator_test = {m: a[[4, 7]] for m, a in modalities.items()}
    run = RunSpec({}, spec.to_dict(), list(modalities), 1, "f" * 64, {}, sample_hashes(coordinator_test))
    report = Site(tmp_path / "site.npz", 0, tmp_path / "state").validate(run)
    assert not report.success
    assert [o.describe() for o in report.failed()] == [
        "expect_no_held_out_samples(samples): 2 of 10 rows unexpected [samples the server keeps for validation or test]"]
