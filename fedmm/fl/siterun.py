"""``fedmm site``: one site's SuperNode and ClientApp executor, telling its operator what happens.

It prints one line per event, read from its processes' logs: connected (node id), waiting
for a run, validating (the report's verdict), round k trained, refused (and why). A refused
SuperNode (Flower exit 305) makes it exit non-zero with the reason. After a crash the
SuperLink keeps the old node online until its heartbeat expires (about 40 s in Flower 1.42)
and refuses the same key meanwhile: a site that finds its own crash marker (in
its state folder: ``site_<id>.pid``, left by a process that did not stop cleanly) retries until the node is
released, and says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from fedmm.config import is_loopback
from fedmm.fl.deploy import DeploymentError, Federation, Runtime, SiteSpec

SITE_MARKER = "FEDMM_SITE "
"""Prefix of the ClientApp's log lines that ``fedmm site`` shows its operator."""
REFUSED_EXIT = 305
"""Flower's SUPERNODE_CONNECTION_ERROR (refused by the SuperLink), as its SuperNode logs it."""
RETRY_SECONDS = 5.0


class LogFollower:
    """New complete lines of a growing log file."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, path.stat().st_size if path.exists() else 0, b""

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace").rstrip() for line in complete]


def _identity(pid: int) -> str:
    """``PID STARTTIME``: names one live process even after its PID is reused (Linux /proc); a zombie is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return f"{pid} gone"
    return f"{pid} gone" if fields[0] == b"Z" else f"{pid} {fields[19].decode()}"


def _crashed_before(marker: Path) -> bool:
    """Whether a previous ``fedmm site`` on this state folder died without stopping its node."""
    if not marker.exists():
        return False
    recorded = marker.read_text().strip()
    pid = recorded.split()[0] if recorded else ""
    if not pid.isdigit() or _identity(int(pid)) != recorded:
        return True
    raise DeploymentError(f"another `fedmm site` (pid {pid}) runs on {marker.parent}")


def _events(federation: Federation, superlink: str, say: Callable[[str], None]) -> Callable[[], list[str]]:
    """A poll function printing the SuperNode's and ClientApp's events; returns the refusal lines seen."""
    logs = federation.runtime.home / "logs"
    node = LogFollower(logs / f"supernode-{federation.sites[0].client_id}.log")
    executor = LogFollower(logs / f"executor-{federation.sites[0].client_id}.log")
    refusal: list[str] = []

    def poll() -> list[str]:
        for line in node.lines():
            if "SuperNode ID:" in line:
                say(f"connected to {superlink} as node {line.rsplit(':', 1)[1].strip()}; waiting for a run")
            elif f"Exit Code: {REFUSED_EXIT}" in line:
                refusal.append("")
            elif refusal and not refusal[-1].startswith("For more information") and line.strip():
                refusal.append(line.strip())
        for line in executor.lines():
            if SITE_MARKER in line:
                say(line.split(SITE_MARKER, 1)[1])
        return refusal

    return poll


def _attempt(runtime: Runtime, site: SiteSpec, superlink: str, root_certificates: Path | None,
             say: Callable[[str], None]) -> tuple[int | None, list[str]]:
    """Run once: ``(SuperNode exit code, refusal lines)``; ``(None, [])`` when stopped from outside.

    Flower logs its exit code 305 (connection refused) but the SuperNode process exits with 1,
    so a refusal is read from the log.
    """
    with Federation(runtime, [site], superlink=superlink, root_certificates=root_certificates) as federation:
        poll = _events(federation, superlink, say)
        node = federation.processes[f"supernode-{site.client_id}"]
        while all(process.poll() is None for process in federation.processes.values()):
            poll()
            time.sleep(0.2)
        time.sleep(0.2)
        refusal = poll()
        return (REFUSED_EXIT if refusal else node.poll()), [line for line in refusal[:-1] if line]


def run_site(
    runtime: Runtime, site: SiteSpec, superlink: str, root_certificates: Path | None, insecure: bool,
    say: Callable[[str], None], retry_for: float = 120.0,
) -> int:
    """Join ``superlink`` as one site until its SuperNode exits or we are stopped; refusal raises with the reason."""
    if insecure and not is_loopback(superlink):
        raise DeploymentError(f"--insecure is allowed only on loopback, not {superlink!r}: give --root-certificates")
    if not insecure and root_certificates is None:
        raise DeploymentError("give --root-certificates (the SuperLink's CA) or, on loopback only, --insecure")
    marker = site.state_dir / f"site_{site.client_id}.pid"
    site.state_dir.mkdir(parents=True, exist_ok=True)
    retrying = _crashed_before(marker)
    marker.write_text(_identity(os.getpid()))
    deadline = time.monotonic() + retry_for
    say(f"site {site.client_id}: data {site.data_path.name}; joining {superlink}"
        + (" (TLS, node authentication)" if site.auth_key else " (TLS)" if root_certificates else " (insecure)"))
    try:
        while True:
            code, refusal = _attempt(runtime, site, superlink, root_certificates, say)
            if code != REFUSED_EXIT:
                say(f"site {site.client_id}: stopped" + (f" (SuperNode exit code {code})" if code else ""))
                return 0 if code in (None, 0) else 1
            reason = " ".join(refusal) or "the SuperLink refused this node"
            if not retrying or time.monotonic() > deadline:
                raise DeploymentError(
                    f"refused by {superlink}: {reason} (is this site's public key registered? the operator runs "
                    f"`flwr supernode register <site>.pub fedmm`)")
            say(f"refused: the SuperLink still holds this site's node from before its crash; retrying every "
                f"{RETRY_SECONDS:g} s until it is released ({deadline - time.monotonic():.0f} s left)")
            time.sleep(RETRY_SECONDS)
    except SystemExit:
        say(f"site {site.client_id}: stopped")
        raise
    finally:
        marker.unlink(missing_ok=True)
