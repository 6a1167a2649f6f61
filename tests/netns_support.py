"""Hosts for a deployed federation, as Linux network namespaces with private disks (needs root).

:class:`Hosts` builds a switch namespace with two bridges, a sites network (10.77.0.0/24) and
an operator network (10.77.1.0/24), and one namespace per party: the SuperLink host on both
(10.77.0.1, 10.77.1.1), the coordinator on the operator network (10.77.1.2), sites on the
sites network (10.77.0.10 + k). Nothing is added to the host's own namespace: every address
lives in a namespace created here. Each party also holds a mount namespace of its own (a
``sleep`` process keeps it) with a private tmpfs at :attr:`Hosts.private` and another tmpfs
over the staging folder, so no party reads another's files; files reach a party only through
:meth:`Hosts.put` (a tar stream) and leave it through :meth:`Hosts.get`. :meth:`Hosts.close`
kills every process of every namespace and deletes them, also after a failure.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

SITES_NET, OPERATOR_NET = "10.77.0", "10.77.1"
SUPERLINK_PUBLIC, SUPERLINK_OPERATOR, COORDINATOR = f"{SITES_NET}.1", f"{OPERATOR_NET}.1", f"{OPERATOR_NET}.2"


def site_address(k: int) -> str:
    return f"{SITES_NET}.{10 + k}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    """A SuperLink host, a coordinator and ``sites`` site hosts; use as a context manager."""

    def __init__(self, root: Path, sites: int) -> None:
        self.root, self.sites = Path(root), sites
        self.tag = uuid.uuid4().hex[:5]
        self.private, self.stage = self.root / "private", self.root / "stage"
        self.parties = ["superlink", "coordinator", *(f"site{k}" for k in range(sites))]
        self.holders: dict[str, subprocess.Popen] = {}
        self.started: list[subprocess.Popen] = []
        self.namespaces: list[str] = []

    def ns(self, party: str) -> str:
        return f"fm{self.tag}-{party}"

    def __enter__(self) -> Hosts:
        try:
            self._network()
            self.private.mkdir(parents=True, exist_ok=True)
            self.stage.mkdir(parents=True, exist_ok=True)
            for party in self.parties:
                self._hold(party)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add(self, name: str) -> str:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def _network(self) -> None:
        switch = self._add(self.ns("switch"))
        for bridge in ("sitesbr", "operbr"):
            _ip("-n", switch, "link", "add", bridge, "type", "bridge")
            _ip("-n", switch, "link", "set", bridge, "up")
        legs = [("superlink", "sitesbr", SUPERLINK_PUBLIC), ("superlink", "operbr", SUPERLINK_OPERATOR),
                ("coordinator", "operbr", COORDINATOR), *((f"site{k}", "sitesbr", site_address(k)) for k in range(self.sites))]
        for party in self.parties:
            self._add(self.ns(party))
        for i, (party, bridge, address) in enumerate(legs):
            inside, outside = f"e{i}", f"v{self.tag}{i}"
            _ip("-n", switch, "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", self.ns(party))
            _ip("-n", switch, "link", "set", outside, "master", bridge, "up")
            _ip("-n", self.ns(party), "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", self.ns(party), "link", "set", inside, "up")

    def _hold(self, party: str) -> None:
        """A process keeping the party's mount namespace: private tmpfs, staging folder hidden."""
        script = (f"mount -t tmpfs -o mode=700 fedmm-{party} {self.private} && "
                  f"mount -t tmpfs -o mode=700 hidden {self.stage} && echo ready && exec sleep 86400")
        holder = subprocess.Popen(["ip", "netns", "exec", self.ns(party), "unshare", "-m", "--propagation", "private",
                                   "sh", "-c", script], stdout=subprocess.PIPE, text=True)
        self.holders[party] = holder
        if holder.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {party} namespace did not start")

    def command(self, party: str, args: list[str]) -> list[str]:
        """``args`` run inside the party's network and mount namespaces."""
        return ["nsenter", "-t", str(self.holders[party].pid), "-n", "-m", "--", *map(str, args)]

    def run(self, party: str, args: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(party, args), capture_output=True, text=True, timeout=timeout, **kwargs)

    def start(self, party: str, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with open(log, "ab") as out:
            self.started.append(subprocess.Popen(self.command(party, args), stdout=out, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, env=env))
        return self.started[-1]

    def put(self, party: str, files: dict[str, bytes | Path]) -> None:
        """Write files (relative paths under :attr:`private`) into the party's private disk."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, content in files.items():
                data = content.read_bytes() if isinstance(content, Path) else content
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
        subprocess.run(self.command(party, ["tar", "-x", "-C", self.private]), input=buffer.getvalue(), check=True)

    def get(self, party: str, path: str) -> bytes:
        return subprocess.run(self.command(party, ["cat", self.private / path]), capture_output=True,
                              check=True).stdout

    def pids(self, party: str) -> list[int]:
        """Processes in the party's network namespace, its holder excepted."""
        done = subprocess.run(["ip", "netns", "pids", self.ns(party)], capture_output=True, text=True)
        return [int(p) for p in done.stdout.split() if int(p) != self.holders[party].pid]

    def kill(self, party: str) -> None:
        """SIGKILL everything the party runs (a crash), keeping its namespaces and disk."""
        for pid in self.pids(party):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        for name in self.namespaces:
            done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for pid in done.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for process in [*self.started, *self.holders.values()]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
            if process.stdout is not None:
                process.stdout.close()
        deadline = time.monotonic() + 10
        for name in self.namespaces:
            while subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()


class Deployment:
    """A federation on :class:`Hosts`, set up as its parties would: the coordinator makes the PKI and hands out parts.

    ``site_files`` (one per site) and ``coordinator_files`` (validation, test) are delivered to
    their parties' private disks; :meth:`start` runs ``fedmm superlink``, registers the sites'
    keys from the coordinator and starts every ``fedmm site``; :meth:`coordinator` runs a
    deployed training (``tests/deploy_coordinator.py``) there, :meth:`pipeline` ``fedmm run``.
    """

    def __init__(self, hosts: Hosts, repo: Path, logs: Path, site_files: list[Path], coordinator_files: list[Path]):
        self.hosts, self.repo, self.logs = hosts, Path(repo), Path(logs)
        self.site_files, self.coordinator_files = site_files, coordinator_files
        self.fedmm, self.python = str(self.repo / ".venv-site/bin/fedmm"), str(self.repo / ".venv-site/bin/python")
        self.sites: dict[int, subprocess.Popen] = {}
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def fleet(self) -> str:
        return f"{SUPERLINK_PUBLIC}:9092"

    def env(self, **extra: str) -> dict[str, str]:
        private = self.hosts.private
        return {**os.environ, "PYTHONPATH": str(self.repo), "FEDMM_HOME": str(private / "home"),
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "FLWR_HOME": str(private / "flwr"), **extra}

    def overrides(self) -> list[str]:
        """The coordinator's ``flower.*`` settings for this deployment."""
        coordinator = self.hosts.private / "pki" / "coordinator"
        return [f"flower.num_sites={len(self.site_files)}", f"flower.superlink={SUPERLINK_OPERATOR}:9093",
                f"flower.root_certificates={coordinator / 'ca.pem'}",
                f"flower.superexec_secret={coordinator / 'superexec.secret'}"]

    def tree(self, party: str, folder: str) -> dict[str, bytes]:
        """A folder of the party's private disk, as ``{relative path: bytes}``."""
        done = subprocess.run(self.hosts.command(party, ["tar", "-c", "-C", self.hosts.private, folder]),
                              capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}

    def start(self, timeout: float = 120) -> dict[str, float]:
        """PKI, files, SuperLink, registrations, sites; returns seconds until the SuperLink and all sites were up."""
        hosts, private = self.hosts, self.hosts.private
        made = hosts.run("coordinator", [self.fedmm, "pki", "init", "--dir", private / "pki", "--superlink-host",
                                         SUPERLINK_PUBLIC, "--operator-host", SUPERLINK_OPERATOR,
                                         "--sites", len(self.site_files)], env=self.env())
        assert made.returncode == 0, made.stdout + made.stderr
        material = self.tree("coordinator", "pki")
        hosts.put("superlink", {k: v for k, v in material.items() if k.startswith(("pki/superlink/", "pki/pki.json"))})
        for k, data in enumerate(self.site_files):
            prefix = f"pki/sites/site_{k}/"
            hosts.put(f"site{k}", {**{"key/" + n.removeprefix(prefix): v for n, v in material.items()
                                      if n.startswith(prefix)}, f"site_{k}.npz": data})
        hosts.put("coordinator", {p.name: p for p in self.coordinator_files})
        started = time.monotonic()
        superlink = hosts.start("superlink", [self.fedmm, "superlink", "--pki", private / "pki"],
                                self.logs / "superlink.log", self.env())
        wait_for(self.logs / "superlink.log", "Control and Runtime APIs on", timeout, superlink)
        times = {"superlink_s": time.monotonic() - started}
        operator = self.env(FLWR_HOME=str(private / "pki" / "coordinator" / "flwr"))
        for k in range(len(self.site_files)):
            done = hosts.run("coordinator", [self.repo / ".venv-site/bin/flwr", "supernode", "register",
                                             private / "pki" / "coordinator" / "keys" / f"site_{k}.pub", "fedmm"],
                             env=operator)
            assert done.returncode == 0, done.stdout + done.stderr
        for k in range(len(self.site_files)):
            self.start_site(k)
        for k in range(len(self.site_files)):
            wait_for(self.logs / f"site{k}.log", "connected to", timeout, self.sites[k])
        times["sites_s"] = time.monotonic() - started - times["superlink_s"]
        return times

    def start_site(self, k: int) -> subprocess.Popen:
        key = self.hosts.private / "key"
        self.sites[k] = self.hosts.start(
            f"site{k}", [self.fedmm, "site", "--data", self.hosts.private / f"site_{k}.npz", "--partition-id", k,
                         "--superlink", self.fleet, "--root-certificates", key / "ca.pem", "--auth-key", key / f"site_{k}"],
            self.logs / f"site{k}.log", self.env())
        return self.sites[k]

    def coordinator(self, name: str, overrides: list[str]) -> subprocess.Popen:
        """A deployed training named ``name`` (log: ``logs/<name>.log``; see :meth:`result`)."""
        private = self.hosts.private
        args = [self.repo / ".venv/bin/python", self.repo / "tests/deploy_coordinator.py", private / name,
                private / f"{name}.npz", private / "validation.npz", private / "test.npz", *overrides,
                *self.overrides()]
        return self.hosts.start("coordinator", args, self.logs / f"{name}.log", self.env())

    def pipeline(self, name: str, config: Path, overrides: list[str]) -> subprocess.Popen:
        """``fedmm run`` of the deployed graph on the coordinator, over its own data (log: ``logs/<name>.log``)."""
        private = self.hosts.private
        settings = [*overrides, *self.overrides(), f"flower.validation_data={private / 'validation.npz'}",
                    f"flower.test_data={private / 'test.npz'}"]
        args = [self.repo / ".venv/bin/fedmm", "run", "--config", config, *(f"--set={s}" for s in settings)]
        return self.hosts.start("coordinator", args, self.logs / f"{name}.log", self.env())

    def result(self, name: str) -> tuple[bytes, dict]:
        """The run's final state (``.npz`` bytes) and its summary (per-round clients and drops, stage outputs)."""
        return self.hosts.get("coordinator", f"{name}.npz"), json.loads(self.hosts.get("coordinator", f"{name}.json"))


def wait_for(path: Path, text: str, timeout: float, process: subprocess.Popen | None = None, since: int = 0) -> str:
    """The file's text from character ``since`` once it holds ``text``; fails after ``timeout`` or when ``process``
    exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text()[since:] if path.exists() else ""
        if text in content:
            return content
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path.name} within {timeout} s:\n{path.read_text() if path.exists() else ''}")
