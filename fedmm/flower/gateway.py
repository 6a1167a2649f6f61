"""The SuperLink's public face: a TLS endpoint that forwards Flower's Fleet API and nothing else.

Flower 1.42 serves its Fleet, Control and Runtime APIs from one HTTP server on one address
(``--fleet-api-address`` and ``--control-api-address`` are deprecated no-ops). So ``fedmm
superlink`` binds that server to the operator's address and puts this gateway on the public
address the sites reach: requests under ``/v1/fleet/`` go through unchanged (SuperNode
authentication signs headers the gateway does not touch), every other path is answered 404
here, so a site cannot register a key, list runs or submit one. It terminates TLS with the
SuperLink's certificate and speaks TLS to the SuperLink, verified by the federation's CA.

Run: ``python -m fedmm.flower.gateway --listen HOST:PORT --upstream HOST:PORT --certfile ...``
"""

from __future__ import annotations

import argparse
import ssl

import httpx
import uvicorn

FLEET_PREFIX = "/v1/fleet/"
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"host",
              b"proxy-authorization", b"proxy-authenticate"}


class FleetGateway:
    """An ASGI app forwarding ``/v1/fleet/*`` requests to ``upstream`` (``https://HOST:PORT``)."""

    def __init__(self, upstream: str, ca_file: str) -> None:
        self.client = httpx.AsyncClient(base_url=upstream, verify=ssl.create_default_context(cafile=ca_file),
                                        timeout=httpx.Timeout(60.0, connect=10.0))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if not scope["path"].startswith(FLEET_PREFIX):
            await _reply(send, 404, b"only the Flower Fleet API is served on this address\n")
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        path = scope["raw_path"].decode() + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        request = self.client.build_request(scope["method"], path, headers=headers, content=bytes(body))
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as error:
            await _reply(send, 502, f"SuperLink unreachable: {type(error).__name__}\n".encode())
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def _reply(send, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]})
    await send({"type": "http.response.body", "body": text})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT the sites connect to")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the SuperLink (operator address)")
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--ca", required=True, help="the federation's CA certificate, to verify the SuperLink")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    uvicorn.run(FleetGateway(f"https://{args.upstream}", args.ca), host=host.strip("[]"), port=int(port),
                ssl_certfile=args.certfile, ssl_keyfile=args.keyfile, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
