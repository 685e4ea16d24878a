"""Admission and abandonment of inference requests (ASGI middlewares).

- `InflightLimitMiddleware`: at most `limit` POST requests are handled at once; one more is refused with
  429 and Retry-After before its body is read, so a burst far past capacity costs a few bytes per
  refused request instead of a body, a decoded image and a queue slot each.
- `DisconnectMiddleware`: when the client of a POST request goes away before its response is complete,
  the handler task is cancelled; its queued batch item is then dropped by the batcher (counted in
  `aeserve_batch_skipped_total`), and the request is logged with status 499 (client closed request).
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Overloaded, ServiceError

# Set in the scope when the client left; the access log and metrics report status 499 for it.
CLIENT_GONE = "aeserve.client_gone"


@dataclass
class Inflight:
    """POST requests being handled now: counted by InflightLimitMiddleware, read by the batchers (a batch
    does not wait for requests that are not there). `on_release` runs each time one stops counting, so a
    batch waiting for company can stop waiting as soon as none can come."""

    count: int = 0
    on_release: Callable[[], None] | None = None

    def release(self) -> None:
        self.count -= 1
        if self.on_release is not None:
            self.on_release()


class InflightLimitMiddleware:
    """Refuse POST requests past `limit` in flight with 429 (Overloaded), before reading their body."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        retry_after_s: int,
        respond: Callable[[Scope, ServiceError], Any],
        counter: Inflight | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.respond = respond  # (scope, error) -> ASGI response
        self.counter = counter or Inflight()
        self.refused = 0  # a counter for tests and operators

    @property
    def inflight(self) -> int:
        return self.counter.count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            self.refused += 1
            error = Overloaded(
                f"{self.inflight} requests in flight (limit {self.limit}); retry later",
                retry_after_s=self.retry_after_s,
            )
            await self.respond(scope, error)(scope, receive, send)
            return
        # The request stops counting when its response is complete, not when the app returns: what is
        # left (middleware unwinding, the access log) is work no batch can join, and a keep-alive client's
        # next request may already be here by then.
        counted = True
        self.counter.count += 1

        async def send_and_release(message: Message) -> None:
            nonlocal counted
            if counted and message["type"] == "http.response.body" and not message.get("more_body", False):
                counted = False
                self.counter.release()
            await send(message)

        try:
            await self.app(scope, receive, send_and_release)
        finally:
            if counted:
                self.counter.release()


def _declares_no_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return b"transfer-encoding" not in headers and headers.get(b"content-length", b"0") == b"0"


class DisconnectMiddleware:
    """Cancel a POST handler whose client disconnected before the response was complete.

    The server only reports a disconnect through `receive()`, which the handler stops calling once it
    has read the body. So this middleware reads the rest of the conversation itself: after the body is
    complete (or at once for a request without one) a watcher waits on `receive()`; the handler's own
    later `receive()` calls wait for that watcher's news.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cancelled = 0  # a counter for tests and operators

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        no_body = _declares_no_body(scope)
        body_done = asyncio.Event()
        disconnected = asyncio.Event()
        response_done = False
        if no_body:
            body_done.set()
        empty_body_given = False

        async def app_receive() -> Message:
            nonlocal empty_body_given
            if no_body and not empty_body_given:
                empty_body_given = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if body_done.is_set():
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
            elif not message.get("more_body", False):
                body_done.set()
            return message

        async def app_send(message: Message) -> None:
            nonlocal response_done
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                response_done = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, app_receive, app_send))

        async def watch() -> None:
            await body_done.wait()
            while not disconnected.is_set():
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
            if not response_done and not handler.done():
                scope[CLIENT_GONE] = True
                self.cancelled += 1
                handler.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if this is not None and this.cancelling():  # the server cancelled us (shutdown timeout)
                handler.cancel()
                raise
            # else the watcher cancelled the handler because the client left: nobody to answer
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
