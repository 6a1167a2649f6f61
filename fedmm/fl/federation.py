"""The training stage over Flower (``train.transport: flower``): bundle, sites, processes, outcome.

On loopback (no ``flower.superlink``) each client's raw samples become that site's own data
file, and a SuperLink plus one SuperNode per site run as separate processes of the Flower
environment until the ServerApp has trained every round; then all of them are stopped.
With ``flower.superlink`` nothing is started: sites have joined that SuperLink with their
own files (``fedmm site``). Either way the ServerApp writes the same checkpoint and
client-update store as the in-process engine, which is where the outcome is read back from.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from fedmm.config import Config
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.errors import UserError
from fedmm.fl.bundle import (
    DROPPED_MARKER,
    FAILED_MARKER,
    REFUSED_MARKER,
    ROUND_MARKER,
    SITES_FILE,
    UNAVAILABLE_MARKER,
    ServerBundle,
)
from fedmm.fl.deploy import Federation, Runtime, ServerAppWatch, SiteSpec, make_certificates, run_app, write_connection
from fedmm.fl.engine import CHECKPOINT_FILE, FederatedOutcome, _load_checkpoint
from fedmm.fl.history import RoundRecord
from fedmm.fl.pki import make_node_key
from fedmm.fl.site import RunSpec, export_site_files
from fedmm.fl.superlink import AppExecutor
from fedmm.models.multimodal import ModelSpec, build_model
from fedmm.runtime import state_dir
from fedmm.tensors import TensorData

LOG_TAIL = 25


class FederationError(UserError, RuntimeError):
    """The federation over Flower could not run or did not finish; the message says why and what is kept."""


def run_spec(config: Config, prepared: PreparedData, federated: FederatedData, spec: ModelSpec,
             fingerprint: str) -> RunSpec:
    """What every site is told: the config, the model spec, modality order, client count and value bounds."""
    bounds = {k: list(v) for k, v in prepared.manifest["value_bounds"].items()}
    bounds.update({k: list(v) for k, v in config.validation.value_bounds.items()})
    return RunSpec(config.model_dump(mode="json"), spec.to_dict(), list(federated.modalities),
                   federated.num_clients, fingerprint, bounds)


def completed_rounds(workdir: Path) -> int:
    loaded = _load_checkpoint(Path(workdir) / CHECKPOINT_FILE, "cpu")
    return 0 if loaded is None else loaded[0]


def runtime_for(config: Config) -> Runtime:
    """The Flower environment ``flower.venv`` (a relative path: here, else beside the fedmm source tree)."""
    venv = Path(config.flower.venv)
    beside_source = Path(__file__).resolve().parents[2] / venv
    if not venv.is_absolute() and not venv.exists() and beside_source.exists():
        venv = beside_source
    return Runtime(venv, state_dir() / "flower", config.flower.threads_per_site)


def loopback_sites(prepared: PreparedData, federated: FederatedData, directory: Path, node_auth: bool) -> list[SiteSpec]:
    """Each client's own data file (raw samples only), state folder and, with node auth, key pair."""
    paths = export_site_files(prepared, federated, directory / "data")
    return [
        SiteSpec(k, path, directory / "state" / f"site_{k}",
                 make_node_key(directory / "keys", f"site_{k}")[0] if node_auth else None)
        for k, path in enumerate(paths)
    ]


def run_over_flower(
    config: Config, prepared: PreparedData, federated: FederatedData, spec: ModelSpec, fingerprint: str,
    evaluation: dict[str, TensorData], proxy: TensorData, workdir: Path,
    on_round: Callable[[RoundRecord], None] | None = None, federation_hook: Callable[[Federation], None] | None = None,
) -> FederatedOutcome:
    """Train ``config.train.rounds`` rounds over Flower, resuming from ``workdir``'s checkpoint.

    ``federation_hook`` is called with the running loopback :class:`Federation` (fault injection).
    """
    cpu = {split: _to_cpu(data) for split, data in evaluation.items()}
    bundle = ServerBundle(run_spec(config, prepared, federated, spec, fingerprint), cpu, _to_cpu(proxy))
    sites = None
    if config.flower.superlink is None:
        sites = loopback_sites(prepared, federated, Path(workdir) / "flower" / "sites", config.flower.node_auth)
    return run_bundle(config, bundle, spec, workdir, sites, on_round, federation_hook)


def run_bundle(
    config: Config, bundle: ServerBundle, spec: ModelSpec, workdir: Path, sites: list[SiteSpec] | None,
    on_round: Callable[[RoundRecord], None] | None = None, federation_hook: Callable[[Federation], None] | None = None,
) -> FederatedOutcome:
    """Run the ServerApp on ``bundle``: with ``sites`` on a loopback federation started here, else on ``flower.superlink``.

    With ``flower.superexec_secret`` the ServerApp runs here (an :class:`AppExecutor`), so its
    files never leave this machine; the console names every refused or dropped site.
    """
    resumed_from = completed_rounds(workdir)
    code, log = _serve(config, bundle, Path(workdir), sites, on_round, federation_hook, query_only=False)
    return _outcome(config, spec, Path(workdir), resumed_from, code, log, runtime_for(config))


def query_sites(config: Config, bundle: ServerBundle, workdir: Path) -> dict:
    """Ask every site at ``flower.superlink`` who it is and for its own validation report; train nothing.

    Returns ``sites.json``: per client id its sample count, class histogram, modalities and
    validation report, and the refused sites with the reason.
    """
    code, log = _serve(config, bundle, Path(workdir), None, None, None, query_only=True)
    if code != 0 or not (Path(workdir) / SITES_FILE).is_file():
        raise FederationError(f"querying the sites failed (flwr run exit code {code}): {_last_error(log)[:400]}; "
                              f"logs in {runtime_for(config).home / 'logs'}")
    return json.loads((Path(workdir) / SITES_FILE).read_text())


def _serve(
    config: Config, bundle: ServerBundle, workdir: Path, sites: list[SiteSpec] | None,
    on_round: Callable[[RoundRecord], None] | None, federation_hook: Callable[[Federation], None] | None,
    query_only: bool,
) -> tuple[int, list[str]]:
    """``flwr run`` the ServerApp once: ``(exit code, its failure line or its last lines)``."""
    flower, runtime = config.flower, runtime_for(config)
    bundle_dir = bundle.save(workdir / "flower" / "bundle")
    tail: list[str] = []
    failure: list[str] = []

    def on_line(line: str) -> None:
        if line.startswith(ROUND_MARKER):
            if on_round is not None:
                on_round(RoundRecord.from_dict(json.loads(line.removeprefix(ROUND_MARKER))))
            return
        if line.startswith((REFUSED_MARKER, DROPPED_MARKER, UNAVAILABLE_MARKER)):
            print(line, file=sys.stderr, flush=True)
        if line.startswith(FAILED_MARKER):
            failure.append(line.removeprefix(FAILED_MARKER))
        tail.append(line)
        del tail[:-LOG_TAIL]

    run_config = {"bundle": str(bundle_dir), "workdir": str(workdir), "query-only": int(query_only),
                  "sites": flower.num_sites or bundle.run.num_clients}
    if sites is not None:
        tls = flower.tls or flower.node_auth
        certificates = make_certificates(workdir / "flower" / "sites" / "tls") if tls else None
        if not tls:
            print("flower: insecure (no TLS, no node authentication): loopback 127.0.0.1 only", file=sys.stderr)
        with Federation(runtime, sites, certificates, flower.node_auth) as federation:
            if federation_hook is not None:
                federation_hook(federation)
            watch = ServerAppWatch(federation.marker)
            code = run_app(runtime, run_config, on_line, watch=watch)
    elif flower.superexec_secret:
        with AppExecutor(runtime, flower.superlink, Path(flower.root_certificates),
                         Path(flower.superexec_secret)) as executor:
            watch = ServerAppWatch(executor.marker)
            code = run_app(runtime, run_config, on_line, watch=watch)
    else:
        write_connection(runtime, flower.superlink, flower.root_certificates)
        watch, code = None, run_app(runtime, run_config, on_line)
    if watch is not None and watch.fired:
        failure.append(f"the ServerApp process exited with the run unfinished (killed?); flwr run was stopped "
                       f"{watch.grace:g} s later")
    return code, failure or tail


def _last_error(log: list[str]) -> str:
    """The last error in a run's log: the text of flwr's last boxed message, else the last line naming an error."""
    boxed = [line.strip("│ ").strip() for line in log if line.startswith("│")]
    if boxed:
        return " ".join(part for part in boxed if part)
    return next((line for line in reversed(log) if "rror" in line), log[-1] if log else "no output")


def _to_cpu(data: TensorData) -> TensorData:
    return TensorData({k: v.cpu() for k, v in data.inputs.items()}, data.mask.cpu(), data.labels.cpu())


def _outcome(config: Config, spec: ModelSpec, workdir: Path, resumed_from: int, code: int, log: list[str],
             runtime: Runtime) -> FederatedOutcome:
    """The finished run from its checkpoint, or the reason it stopped (``log``: its failure line, else its last lines)."""
    loaded = _load_checkpoint(workdir / CHECKPOINT_FILE, "cpu")
    done = 0 if loaded is None else loaded[0]
    if done < config.train.rounds:
        reason = _last_error(log)
        raise FederationError(
            f"the Flower run stopped after {done} of {config.train.rounds} rounds (flwr run exit code {code}): "
            f"{reason.strip()[:400]}; logs in {runtime.home / 'logs'}; rerun to resume from the checkpoint"
        )
    _, state, server_state, history = loaded
    model = build_model(spec, config.seed)
    model.load_state_dict(state)
    return FederatedOutcome(model=model, history=history, resumed_from=resumed_from, server_state=server_state)
