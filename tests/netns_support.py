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
