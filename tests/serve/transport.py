"""A transport that records what a protocol writes: the serving tests drive Keel's HTTP
protocol (and uvicorn's, to compare) with it, no socket needed."""

from __future__ import annotations

import asyncio
from typing import Any


class Transport(asyncio.Transport):
    """Records every write; closing marks it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
