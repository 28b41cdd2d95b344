"""Request limits: body size while reading, a body-read deadline, content type, JSON shape.

Every check runs before a request costs real work. The body is refused with 413 from its
``Content-Length`` header alone when that is too large, else as soon as the running count of
received bytes passes the limit, without reading the rest (the connection is then closed). The
body is collected as a list of chunks and joined once (linear, not quadratic, in its size). JSON
is parsed by orjson (which refuses infinities and nesting past 1,024) and then held to
``max_json_depth``: a count of the brackets in the bytes answers for almost every request, and
only a body with more brackets than the limit is walked, with a bound.

The errors here are :class:`~keel.errors.KeelError` subclasses with the HTTP status they answer
with; :class:`Overloaded` and :class:`TooManyRequests` carry ``Retry-After`` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from keel.errors import BackendError, DataValidationError, KeelError

__all__ = [
    "Forbidden",
    "Limits",
    "Overloaded",
    "PayloadTooLarge",
    "RequestTimeout",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "check_content_type",
    "check_depth",
    "parse_json",
    "read_body",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


class PayloadTooLarge(KeelError):
    """The request body is larger than ``serve.max_body_mb``."""

    http_status: ClassVar[int] = 413


class UnsupportedMediaType(KeelError):
    """A POST body that is not ``application/json``."""

    http_status: ClassVar[int] = 415


class RequestTimeout(KeelError):
    """The client did not send its whole body within ``serve.body_timeout_s``."""

    http_status: ClassVar[int] = 408


class Unauthorized(KeelError):
    """No token, or one that is unknown, revoked or expired."""

    http_status: ClassVar[int] = 401


class Forbidden(KeelError):
    """A valid token without the scope the route needs."""

    http_status: ClassVar[int] = 403


class TooManyRequests(KeelError):
    """The token's ``rate_limit_per_minute`` is spent; retry after ``retry_after`` seconds."""

    http_status: ClassVar[int] = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class Overloaded(BackendError):
    """The prediction queue would break the latency objective: shed, retry shortly."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    """What one request may be (``serve:`` in keel.yaml)."""

    max_body: int = 8 * 1024 * 1024
    max_instances: int = 10_000
    max_depth: int = 32
    body_timeout_s: float = 30.0


def check_content_type(value: bytes | None) -> None:
    """``application/json`` (parameters such as ``charset`` allowed) or 415."""
    if value == b"application/json":  # what clients send, checked without splitting
        return
    if value is not None:
        media = value.split(b";", 1)[0].strip().lower()
        if media == b"application/json":
            return
    shown = "none" if value is None else repr(value.decode("latin-1"))
    raise UnsupportedMediaType(
        f"Content-Type {shown} is not accepted: send the body as JSON with "
        "'Content-Type: application/json'.",
        field="content-type",
    )


async def read_body(
    receive: Receive, content_length: bytes | None, limits: Limits, *, complete: bool = False
) -> bytes:
    """The whole request body, refused as soon as it is known to be too large or too slow.

    ``complete``: the server says the whole body has already arrived (Keel's HTTP protocol sets
    ``keel.body_complete`` in the scope), so ``receive()`` answers at once and the one message
    is taken without arming the body deadline (a timer per request).

    Raises:
        PayloadTooLarge: ``Content-Length`` or the bytes received so far exceed the limit.
        RequestTimeout: The body did not arrive within ``limits.body_timeout_s``.
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = 0  # the HTTP parser rejects a malformed length before we see it
        if declared > limits.max_body:
            raise _too_large(declared, limits)
    if complete:
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body: bytes = message.get("body", b"")
            if len(body) > limits.max_body:
                raise _too_large(len(body), limits)
            return body
        if message["type"] == "http.disconnect":
            raise RequestTimeout("the client disconnected before sending its body.", field="body")
        first = message.get("body", b"")  # more to come after all: read it under the deadline
        if len(first) > limits.max_body:
            raise _too_large(len(first), limits)
        chunks: list[bytes] = [first]
        size = len(first)
    else:
        chunks, size = [], 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):  # one deadline for the whole body
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestTimeout(
                        "the client disconnected before sending its body.", field="body"
                    )
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                if size > limits.max_body:
                    raise _too_large(size, limits)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {limits.body_timeout_s:g} s "
            f"({size} bytes received); send it at once (serve.body_timeout_s).",
            field="body",
        ) from None


def _too_large(size: int, limits: Limits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body of {size} bytes (or more) exceeds the limit of {limits.max_body} bytes "
        "(serve.max_body_mb); send fewer instances per request or use 'keel predict' for "
        "batch scoring.",
        field="body",
    )


def parse_json(body: bytes, limits: Limits, *, example: str) -> Any:
    """Parse a request body and hold it to the depth limit.

    Raises:
        DataValidationError: Not JSON, or nested deeper than ``limits.max_depth``.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DataValidationError(
            f"request body is not valid JSON ({exc}). Send {example}.", field="body"
        ) from exc
    if body.count(b"[") + body.count(b"{") > limits.max_depth:  # else it cannot be too deep
        check_depth(value, limits.max_depth)
    return value


def check_depth(value: Any, limit: int) -> None:
    """Raise DataValidationError if ``value`` nests objects/arrays deeper than ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise DataValidationError(
                f"request body nests objects and arrays deeper than {limit} levels "
                "(serve.max_json_depth); send flat instances.",
                field="body",
            )
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values() if _nested(child))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if _nested(child))


def _nested(value: Any) -> bool:
    return isinstance(value, (dict, list))
