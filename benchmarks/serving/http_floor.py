"""The HTTP floor: a bare ASGI app that reads the request body and answers a constant.

Same stack as ``keel serve`` (uvicorn, one worker, uvloop, httptools, no access log), no
framework, no JSON parsing, no model: what one HTTP round trip costs on this machine.

usage: python -m uvicorn http_floor:app --host 127.0.0.1 --port P --workers 1 --loop uvloop
       --http httptools --no-access-log --log-level warning
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]

ANSWER = b'{"predictions":["<=50K"],"probabilities":[0.5]}'
HEADERS = [(b"content-type", b"application/json")]


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":  # lifespan: accept startup/shutdown
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
