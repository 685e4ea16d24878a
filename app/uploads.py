"""Reading request bodies: the body-size cap (an ASGI middleware) and image uploads sent either as
multipart fields or as a raw body with an image content type."""

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.batching import off_loop
from app.errors import InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType
from app.imaging import IMAGE_CONTENT_TYPES

# A JSON body above this is parsed, and its arrays checked, in a worker thread: 20 MB of nested lists
# took 7.7 s on the event loop, and health probes waited for it.
LARGE_JSON_BYTES = 256 * 1024


def check_json_lists(body: bytes, what: str) -> None:
    """Refuse, before parsing, a JSON body made mostly of lists or objects. Python's parser holds the
    interpreter lock, so even in a worker thread 20 MB of `[],[],...` (6.5 M lists, 2.5 s to parse)
    stalls every request. Real arrays hold numbers: a [N, h, w] token grid has a list per row of w."""
    containers = body.count(b"[") + body.count(b"{")  # objects cost the parser as much as lists
    if containers > 4096 + len(body) // 16:
        raise InvalidInput(
            f"{what} holds {containers} JSON lists and objects in {len(body)} bytes; arrays this nested and "
            "this empty are refused (send arrays of numbers)",
            field="body",
        )


def json_numbers(value: Any) -> np.ndarray:
    """A JSON value that must be a (nested) list of numbers, as a numpy array of numpy's choosing (object
    for integers beyond int64, which the caller converts or refuses).

    Raises TypeError when anything but numbers and lists is in it: booleans, strings (even "1"), null,
    objects. numpy alone would turn [0.5, true] into [0.5, 1.0], and [1e30, "1"] into [1e30, 1.0].
    Ragged lists raise ValueError, as numpy does.
    """
    pending: list[list[Any]] = [[value]]
    while pending:
        items = pending.pop()
        types = set(map(type, items))  # one pass in C over a flat list; type(True) is bool, not int
        if others := types - {int, float, list}:
            raise TypeError(f"JSON values of type {', '.join(sorted(t.__name__ for t in others))}")
        if list in types:
            pending.extend(item for item in items if type(item) is list)
    return np.asarray(value)


class BodyLimitMiddleware:
    """Refuse bodies over `limit` bytes with 413: at once from Content-Length, else while streaming
    (the app's own response is replaced once the cap is crossed)."""

    def __init__(self, app: ASGIApp, limit: int, respond: Callable[[Scope, ServiceError], Any]) -> None:
        self.app = app
        self.limit = limit
        self.respond = respond  # (scope, error) -> ASGI response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = PayloadTooLarge(f"request body exceeds {self.limit} bytes", field="body")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self.respond(scope, error)(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise error
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # our 413 goes out instead of whatever the app made of the exception
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self.respond(scope, error)(scope, receive, send)


@dataclass
class Upload:
    """A parsed request: image files by field name, plain form fields, or a JSON document."""

    files: dict[str, list[bytes]] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    json: Any = None
    size: int = 0  # bytes of the body (after any Content-Encoding), for deciding where to parse it

    def images(self, name: str, *, required: bool = True) -> list[bytes]:
        if name in self.fields:
            raise InvalidInput(
                f"field {name!r} must be a file (a multipart part with a filename), not a text field",
                field=name,
            )
        found = self.files.get(name, [])
        if required and not found:
            raise InvalidInput(f"missing image field {name!r}", field=name)
        return found

    def optional(self, name: str) -> bytes | None:
        """The single image of a field, or None when absent."""
        found = self.images(name, required=False)
        if len(found) > 1:
            raise InvalidInput(f"field {name!r} holds {len(found)} images; send one", field=name)
        return found[0] if found else None

    def one(self, name: str) -> bytes:
        """The single image of a required field."""
        found = self.optional(name)
        if found is None:
            raise InvalidInput(f"missing image field {name!r}", field=name)
        return found


def decompressed(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body as it was before its Content-Encoding (gzip or deflate), at most `max_bytes` once inflated
    (AESERVE_MAX_BODY_BYTES: the limit holds for what is parsed, not only for what was sent)."""
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported; use gzip or deflate")
    # gzip: a gzip header; deflate: a zlib stream (RFC 9110), or a raw one from some clients
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)
    try:
        try:
            out = inflater.decompress(body, max_bytes + 1)
        except zlib.error:
            if coding != "deflate":
                raise
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {coding} data: {exc}") from exc
    if len(out) > max_bytes:
        raise PayloadTooLarge(f"the {coding} body inflates to over {max_bytes} bytes")
    if not inflater.eof:
        raise InvalidInput(f"the {coding} body is truncated")
    if inflater.unused_data:
        raise InvalidInput(f"{len(inflater.unused_data)} bytes follow the end of the {coding} data")
    return out


async def inflated_body(request: Request, max_bytes: int) -> bytes:
    """The request's body as it was before its Content-Encoding (see `decompressed`)."""
    return decompressed(await request.body(), request.headers.get("content-encoding"), max_bytes)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_upload(
    request: Request,
    *,
    max_images: int,
    raw_field: str = "image",
    fields: tuple[str, ...] = ("image",),
    allow_json: bool = False,
    allow_empty: bool = False,
) -> Upload:
    """Parse multipart/form-data, a raw image body (stored under `raw_field`) or, where allowed, JSON.
    A multipart part under a name other than `fields` is refused: a misspelt file field would otherwise
    be silently ignored by operations whose image is optional, and an option sent as a text field
    (`-F seed=1`) instead of in the query string would be too. A compressed body (Content-Encoding gzip
    or deflate) is inflated first, whatever it holds."""
    encoding = request.headers.get("content-encoding")
    if encoding and encoding.strip().lower() != "identity":
        data = await inflated_body(request, request.app.state.settings.max_body_bytes)

        async def replay() -> Message:  # what the parsers below read: the inflated body
            return {"type": "http.request", "body": data, "more_body": False}

        request = Request(request.scope, replay)
    media = _media_type(request)
    if media == "multipart/form-data":
        try:
            form = await request.form(max_files=max_images + 1, max_fields=64, max_part_size=1 << 20)
        except HTTPException as exc:  # starlette's multipart errors
            raise InvalidInput(f"malformed multipart body: {exc.detail}", field="body") from exc
        upload = Upload()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in fields:
                    raise InvalidInput(
                        f"unexpected file field {key!r}; this operation takes {', '.join(fields)}",
                        field=fields[0],  # the field the client most likely meant
                    )
                upload.files.setdefault(key, []).append(await value.read())
            elif key in fields:
                upload.fields[key] = value  # a text part where a file belongs: Upload.images names it
            else:  # options are query parameters; a form field would be silently ignored
                raise InvalidInput(
                    f"unexpected form field {key!r}: options go in the query string (?{key}=...); "
                    f"the form carries only the files {', '.join(fields)}",
                    field=key,
                )
        count = sum(len(v) for v in upload.files.values())
        if count > max_images:
            raise InvalidInput(f"{count} images in one request; the limit is {max_images}", field="images")
        return upload
    if media in IMAGE_CONTENT_TYPES:
        return Upload(files={raw_field: [await request.body()]})
    if allow_json and (media == "application/json" or media.endswith("+json")):
        body = await request.body()
        check_json_lists(body, "the body")
        try:  # a large body takes seconds to parse
            doc = await off_loop(len(body), LARGE_JSON_BYTES, json.loads, body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
            raise InvalidInput(f"body is not valid JSON: {exc}", field="body") from exc
        return Upload(json=doc, size=len(body))
    if allow_empty and not await request.body():
        return Upload()
    accepted = "multipart/form-data, " + ", ".join(sorted(IMAGE_CONTENT_TYPES))
    if allow_json:
        accepted += ", application/json"
    raise UnsupportedMediaType(
        f"content type {media or 'none'!r} is not accepted; send {accepted}", field="body"
    )
