"""The ids a server gives the requests that come without one.

An id is 20 hex digits drawn once per server process (80 random bits) then a serial, 12 hex
digits: 32 characters like a uuid4's hex, unique across restarts and worker processes, and
made without a system call or a random draw per request. Because an id carries its serial,
the server can remember what it issued in a ring indexed by serial
(:class:`keel.monitor.feedback.RecentIds`) instead of in a table of strings.
"""

from __future__ import annotations

import itertools
import secrets

__all__ = ["RequestIds"]

_DIGITS = 12
_HEX = "0123456789abcdef"


class RequestIds:
    """One server process's request ids: :meth:`new` makes one, :meth:`serial` reads it back."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(10)
        #: The serial of the last id made (0 before the first).
        self.last = 0
        self._counter = itertools.count(1)
        self._cut = len(self.prefix)
        self._length = self._cut + _DIGITS

    def new(self) -> str:
        """A new id."""
        self.last = serial = next(self._counter)
        return f"{self.prefix}{serial:012x}"

    def serial(self, request_id: str) -> int | None:
        """The serial of an id this process made; None for any other id, a client's own
        included (one that copies this process's prefix gets None unless its serial is one
        already made, which names a request this process did answer)."""
        if len(request_id) != self._length or not request_id.startswith(self.prefix):
            return None
        digits = request_id[self._cut :]
        if digits.strip(_HEX):  # int() would also take "0x1f", " 1F" or "1_f"
            return None
        serial = int(digits, 16)
        return serial if 0 < serial <= self.last else None
