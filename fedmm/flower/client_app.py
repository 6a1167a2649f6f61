"""The fedmm ClientApp: a site answers the server's query (who it is, its validation report) and trains.

The SuperNode's node config names the site: ``partition-id`` (its client id), ``data-path``
(its bring-your-own-data file), optionally ``state-dir`` (where it keeps per-run state;
default: ``.fedmm-site`` beside the data file) and ``torch-threads`` (default 1).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedmm.fl.site import RunSpec, Site, unlabelled_proxy
from fedmm.fl.siterun import SITE_MARKER
from fedmm.flower.records import RUN, payload_content, read_train

app = ClientApp()
_sites: dict[tuple[str, int], Site] = {}


def site_of(context: Context) -> Site:
    """This node's site, built once per process (the long-running executor keeps it warm)."""
    config = context.node_config
    data_path, client = str(config["data-path"]), int(config["partition-id"])
    if (data_path, client) not in _sites:
        torch.set_num_threads(int(config.get("torch-threads", 1)))
        state_dir = config.get("state-dir") or Path(data_path).parent / ".fedmm-site"
        _sites[data_path, client] = Site(data_path, client, state_dir)
    return _sites[data_path, client]


@app.query()
def describe(msg: Message, context: Context) -> Message:
    """Who this site is and, when asked, its own validation report (never its data)."""
    site = site_of(context)
    run = RunSpec.from_json(str(msg.content[RUN]["spec"]))
    reply = {"client_id": site.client_id, "data_sha256": site.data_sha256, **site.profile(run)}
    if bool(msg.content[RUN]["validate"]):
        say(f"validating {site.data_path.name} ({len(site.dataset)} samples) for run {msg.metadata.run_id}")
        report = site.validate(run)
        reply["validation"] = json.dumps(report.to_dict())
        failed = "; ".join(o.describe() for o in report.failed())
        say("validation passed" if report.success else f"validation failed, the server will refuse this site: {failed}")
    else:
        say(f"joined run {msg.metadata.run_id} ({len(site.dataset)} samples, not validated)")
    return Message(RecordDict({"site": ConfigRecord(reply)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local training under the server's instruction; replies with the strategy's payload."""
    site = site_of(context)
    run, instruction, global_state, server_state, proxy = read_train(msg.content)
    proxy_data = unlabelled_proxy(proxy) if proxy is not None else None
    started = time.monotonic()
    payload = site.fit(run, global_state, server_state, instruction, proxy_data)
    say(f"round {instruction.server_round + 1} trained ({payload.num_examples} examples, "
        f"{time.monotonic() - started:.1f} s)")
    return Message(payload_content(payload), reply_to=msg)


def say(event: str) -> None:
    """One event line for the site's operator (``fedmm site`` shows it)."""
    print(SITE_MARKER + event, flush=True)
