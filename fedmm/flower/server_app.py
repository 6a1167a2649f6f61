"""The fedmm ServerApp: the in-process round engine, with its clients reached over Flower's Grid.

The run config names a server bundle (:class:`~fedmm.fl.bundle.ServerBundle`, written by the
training stage) and the working folder (checkpoints, client-update store), so a restarted
ServerApp resumes from the last finished round exactly as the in-process engine does.

Before the first round every SuperNode is asked who it is (its ``partition-id``) and, with
``flower.validate_sites``, for its own validation report; a site whose data fails is refused
(named with its failed expectations) and only that report ever reaches the server.
Each round the selected clients get a train message; replies are aggregated in client-id
order (so the result is bit-identical to the in-process engine), and a client that has not
replied within ``flower.round_timeout`` is dropped from that round and the rest of the run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

from fedmm.data.validation import ValidationReport
from fedmm.fl.bundle import (
    DROPPED_MARKER,
    FAILED_MARKER,
    REFUSED_MARKER,
    ROUND_MARKER,
    SITES_FILE,
    TIMINGS_FILE,
    UNAVAILABLE_MARKER,
    ServerBundle,
)
from fedmm.fl.engine import ClientPool, RoundReplies, run_federated
from fedmm.fl.federation import FederationError
from fedmm.fl.history import RoundRecord
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.site import proxy_inputs
from fedmm.fl.strategies import make_strategy
from fedmm.fl.strategy import ServerContext, Strategy
from fedmm.flower.polling import Backoff
from fedmm.flower.records import RUN, read_payload, train_content
from fedmm.tensors import State

POLL_SECONDS = (0.05, 0.25)
"""The ServerApp pulls a round's replies 0.05 s after sending, backing off to every 0.25 s (each pull is an
HTTP request the SuperLink serves; the sites answer no sooner than their 3 s pull from it)."""

UNAVAILABLE_PAUSE = 1.0
"""Seconds before asking again after the SuperLink reported a node unavailable (until it lists the node as
offline, it may answer so at once)."""

app = ServerApp()


class FlowerClients(ClientPool):
    """The round's clients as SuperNodes behind a Flower Grid."""

    def __init__(self, grid: Grid, bundle: ServerBundle) -> None:
        self.grid, self.bundle = grid, bundle
        self.flower = bundle.run.parsed.flower
        self.num_clients = bundle.run.num_clients
        self.nodes: dict[int, int] = {}
        self.sites: dict[int, dict] = {}
        self.refused: dict[int, str] = {}
        self.lost: set[int] = set()
        self.timings: list[dict] = []
        parsed = bundle.run.parsed
        self.proxy = proxy_inputs(bundle.proxy) if make_strategy(parsed.train, parsed.seed).needs_proxy else None

    def _exchange(self, messages: dict[int, Message], timeout: float) -> dict[int, Message]:
        """Push one message per client, pull replies until all came back or ``timeout`` passed."""
        ids = dict(zip(self.grid.push_messages(list(messages.values())), messages))
        replies: dict[int, Message] = {}
        deadline, backoff = time.monotonic() + timeout, Backoff(*POLL_SECONDS)
        while ids and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(list(ids)):
                replies[ids.pop(reply.metadata.reply_to_message_id)] = reply
            if ids:
                backoff.wait()
        return replies

    def connect(self, num_sites: int) -> None:
        """Wait for ``num_sites`` sites to describe themselves, refusing sites whose data fails validation.

        A node the SuperLink reports unavailable (a crashed site's node that Flower has not let go of
        yet) is asked again once it is back (a site's restarted node may keep its id: with node
        authentication the id follows the key), until ``flower.connect_timeout``.
        """
        deadline = time.monotonic() + self.flower.connect_timeout
        reported: set[int] = set()
        content = RecordDict({RUN: ConfigRecord({"spec": self.bundle.run.to_json(),
                                                 "validate": self.flower.validate_sites})})
        while len(self.sites) < num_sites and time.monotonic() < deadline:
            queries = {node: Message(content, dst_node_id=node, message_type="query")
                       for node in self._await_nodes(num_sites, deadline)}
            unavailable = []
            for node, reply in self._exchange(queries, deadline - time.monotonic()).items():
                if reply.has_error() and reply.error.code == ErrorCode.NODE_UNAVAILABLE:
                    unavailable.append(node)
                elif reply.has_error():
                    raise FederationError(f"site on node {node} failed to describe itself: {reply.error.reason}")
                else:
                    self._describe(node, reply)
            for node in sorted(set(unavailable) - reported):
                print(f"{UNAVAILABLE_MARKER}{node}: the SuperLink reports it unavailable (a site's node from before "
                      "a crash?); waiting for it to connect again", flush=True)
            reported.update(unavailable)
            if unavailable:
                time.sleep(UNAVAILABLE_PAUSE)
        missing = sorted(set(range(self.num_clients)) - set(self.sites))
        if missing:
            raise FederationError(f"no site answered for client ids {missing} within "
                                  f"flower.connect_timeout={self.flower.connect_timeout:g} s")
        if not self.nodes:
            raise FederationError(f"every site was refused: {self.refused}")

    def _await_nodes(self, num_sites: int, deadline: float) -> list[int]:
        """The connected nodes not yet heard from, once they and the sites heard from make ``num_sites``."""
        heard = {site["node_id"] for site in self.sites.values()}
        while True:
            waiting = sorted(set(self.grid.get_node_ids()) - heard)
            if len(waiting) + len(heard) >= num_sites:
                return waiting
            if time.monotonic() > deadline:
                raise FederationError(f"only {len(waiting) + len(heard)} of {num_sites} sites connected within "
                                      f"flower.connect_timeout={self.flower.connect_timeout:g} s")
            time.sleep(0.2)

    def _describe(self, node: int, reply: Message) -> None:
        """Record what a site said of itself; refuse it if its data failed validation."""
        site = dict(reply.content["site"])
        client = int(site["client_id"])
        if client in self.sites:
            raise FederationError(f"two SuperNodes claim client id {client}")
        report = json.loads(site.pop("validation", "null"))
        site.update({key: json.loads(site[key]) for key in ("classes", "modalities") if key in site})
        self.sites[client] = {**site, "node_id": node, "validation": report}
        if report is not None and not report["success"]:
            failed = ValidationReport.from_dict(report).failed()
            self.refused[client] = "; ".join(o.describe() for o in failed)
            print(f"{REFUSED_MARKER}{client}: its data failed validation: {self.refused[client]}", flush=True)
            return
        self.nodes[client] = node

    def fit_round(
        self, server_round: int, state: State, instructions: list[TrainInstruction], strategy: Strategy
    ) -> RoundReplies:
        server_state = strategy.client_state()
        reachable = [ins for ins in instructions if ins.client_id in self.nodes and ins.client_id not in self.lost]
        messages = {
            ins.client_id: Message(
                train_content(self.bundle.run, ins, state, server_state, self.proxy),
                dst_node_id=self.nodes[ins.client_id], message_type="train", group_id=str(server_round),
            )
            for ins in reachable
        }
        started = time.monotonic()
        replies = self._exchange(messages, self.flower.round_timeout)
        payloads, dropped = [], []
        for ins in instructions:
            reply = replies.get(ins.client_id)
            if reply is None or reply.has_error():
                dropped.append(ins.client_id)
                if reply is not None:
                    print(f"{DROPPED_MARKER}{ins.client_id} in round {server_round + 1}: it failed: "
                          f"{reply.error.reason}", flush=True)
                elif ins.client_id in messages:
                    self.lost.add(ins.client_id)
                    print(f"{DROPPED_MARKER}{ins.client_id} in round {server_round + 1}: no reply within "
                          f"flower.round_timeout={self.flower.round_timeout:g} s; it is left out of later rounds",
                          flush=True)
                continue
            payloads.append(read_payload(reply.content, (strategy.payload_type,)))
        self.timings.append({"round": server_round + 1, "exchange_seconds": time.monotonic() - started,
                             "clients": len(payloads), "selected": len(instructions), "dropped": dropped})
        needed = self.flower.min_clients or math.ceil(len(instructions) / 2)
        if len(payloads) < needed:
            raise FederationError(
                f"round {server_round + 1}: {len(payloads)} of {len(instructions)} selected clients replied within "
                f"flower.round_timeout={self.flower.round_timeout:g} s (dropped {dropped}); flower.min_clients is "
                f"{needed}. The checkpoint after round {server_round} is kept: rerun to resume"
            )
        return RoundReplies(payloads, dropped)


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        serve(grid, context)
    except FederationError as error:
        print(FAILED_MARKER + str(error), flush=True)
        raise


def serve(grid: Grid, context: Context) -> None:
    """Connect the sites, then run (or resume) the configured rounds over them."""
    bundle = ServerBundle.load(str(context.run_config["bundle"]))
    workdir = Path(str(context.run_config["workdir"]))
    config = bundle.run.parsed
    torch.set_num_threads(config.flower.threads_per_site)
    pool = FlowerClients(grid, bundle)
    pool.connect(int(context.run_config["sites"]))
    (workdir / SITES_FILE).write_text(json.dumps({"sites": pool.sites, "refused": pool.refused}, indent=2))
    if int(context.run_config.get("query-only", 0)):
        return
    strategy = make_strategy(config.train, config.seed, ServerContext(bundle.run.model_spec, "cpu", bundle.proxy))

    def report(record: RoundRecord) -> None:
        (workdir / TIMINGS_FILE).write_text(json.dumps(pool.timings))
        print(ROUND_MARKER + json.dumps(record.to_dict()), flush=True)

    run_federated(
        bundle.run.model_spec, pool, bundle.evaluation, strategy, config.train.rounds, config.seed, workdir, "cpu",
        on_round=report, eval_every=config.train.eval_every,
    )
