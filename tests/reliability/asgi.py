"""A raw ASGI sender: runs one corpus case through a TestClient's app on the client's event loop, with
the path exactly as a server hands it over (no client-side '..' normalization, as httpx would do)."""

import asyncio
from typing import Any
from urllib.parse import unquote

from fastapi.testclient import TestClient

from bench.reliability.corpus import Case


def send(client: TestClient, case: Case) -> tuple[int, dict[str, str], bytes]:
    """Run `case` through the client's app on the client's event loop, as uvicorn would hand it over."""
    path, _, query = case.target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": case.method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in case.headers.items()]
        + [(b"content-length", str(len(case.body)).encode()), (b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    answer: dict[str, Any] = {"body": b""}

    async def run() -> None:
        sent = False
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": case.body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send_(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    done.set()

        await client.app(scope, receive, send_)

    assert client.portal is not None
    client.portal.call(run)
    return answer["status"], answer["headers"], answer["body"]
