"""A long-running ClientApp executor for a SuperNode started with ``--isolation process``.

Flower 1.42's default (``--isolation subprocess``) starts a fresh ``flwr-clientapp`` process
for every message, which imports torch and rebuilds the site each time (measured: about 40 s
a round for 8 sites on 2 cores). With ``--isolation process`` the SuperNode leaves running
ClientApps to "a separate independent process"; this is that process. It claims the
SuperNode's ClientApp tasks over the SuperNode's Runtime API (as Flower's SuperExec does)
and runs each with Flower's own task functions (pull the task input, run the ClientApp,
push the reply and the task's status, heartbeats while it runs), in this one process, so
torch, the site's data and its model stay loaded between rounds.

Run it next to its SuperNode: ``python -m fedmm.flower.executor --runtime-api 127.0.0.1:PORT``.
One executor may serve several SuperNodes of one machine (``--runtime-api`` repeated; their
tasks then run one after another): a loopback federation of many sites on a few cores needs
a few torch processes, not one per site.
"""

from __future__ import annotations

import argparse
import os
import signal
from logging import ERROR, INFO, WARNING

import httpx
from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore import log
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from fedmm.flower.client_app import app as client_app
from fedmm.flower.polling import Backoff

POLL_SECONDS = (0.25, 1.0)
"""An executor asks each SuperNode for a task 0.25 s after its last one, backing off to every 1 s while
idle; its SuperNode itself pulls from the SuperLink every 3 s when idle. (Every 0.25 s, a loopback
federation of three sites used 2.25 CPU s per idle 30 s; backing off to 1 s, 1.15.)"""


def _runtime_client(
    address: str, certificates: bytes | None, component: str, token: str | None = None, tries: int | None = None,
):
    """A Runtime API client; ``tries`` bounds its retries (Flower's default retries a refused connection forever)."""
    interceptors = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    retry = make_simple_http_retry_invoker()
    if tries is not None:
        retry.max_tries = tries
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=certificates is None, root_certificates=certificates,
        interceptors=interceptors, retry_invoker=retry,
    )


def run_task(address: str, certificates: bytes | None, token: str) -> None:
    """One ClientApp task, as ``flwr-clientapp`` runs it, without leaving the process."""
    client = _runtime_client(address, certificates, "flwr-clientapp", token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        message, context, _run, _fab = pull_task_input(client)
        reply = client_app(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as error:  # the server gets the reason as an error reply, as with flwr-clientapp
        log(ERROR, "ClientApp raised an exception", exc_info=error)
        details = f"{type(error).__name__}: {error}"
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
            push_task_output(client, context, status, details)
        except Exception as error:  # e.g. the run stopped meanwhile: nothing to deliver, serve the next task
            log(WARNING, "could not deliver the task's reply: %s", error)
        heartbeat.stop()
        client.close()


def serve(addresses: list[str], root_certificates: str | None = None, parent_pid: int | None = None) -> None:
    """Claim and run the ClientApp tasks of these SuperNodes' Runtime APIs until stopped."""
    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)
    certificates = validate_and_resolve_root_certificates(root_certificates, root_certificates is None)
    controls = {address: _runtime_client(address, certificates, "SuperExec", tries=1) for address in addresses}
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    log(INFO, "fedmm ClientApp executor for %s (pid %d)", ", ".join(addresses), os.getpid())
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    backoff = Backoff(*POLL_SECONDS)
    while True:
        idle = True
        for address, control in controls.items():
            try:
                task = control.AcquireTask(request)
            except httpx.HTTPError:  # this SuperNode is gone or restarting: keep serving the others
                continue
            if task.HasField("task") and task.token:
                run_task(address, certificates, task.token)
                idle = False
        if idle:
            backoff.wait()
        else:
            backoff.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api", required=True, action="append",
                        help="a SuperNode's Runtime API address (HOST:PORT); repeat for several")
    parser.add_argument("--root-certificates", default=None, help="CA certificate of a TLS Runtime API")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the launcher) exits")
    args = parser.parse_args()
    serve(args.runtime_api, args.root_certificates, args.parent_pid)


if __name__ == "__main__":
    main()
