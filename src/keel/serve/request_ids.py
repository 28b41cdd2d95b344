"""The ids a server gives the requests that come without one.

An id is 17 hex digits drawn once per server process (68 random bits) then a serial of 15
decimal digits: 32 characters, unique across restarts and worker processes, and made without a
system call or a random draw per request. Because an id carries its serial, the server can
remember what it issued in a ring indexed by serial (:class:`keel.monitor.feedback.RecentIds`)
instead of in a table of strings.

The serial is decimal, counted from 10**14 (so its first digit is never 0), because that is the
form both cheapest to write (``str`` of an int, no format spec) and cheapest to read back
exactly: ASCII digits of a fixed length that do not start with 0 are one integer's only
spelling, so no other string (``0x``, a sign, spaces, underscores, other scripts' digits) can
name the same serial. After 9 * 10**14 ids (285 years at 100,000 requests a second) the serial
grows a digit: the ids stay unique, only no longer read back.
"""

from __future__ import annotations

import itertools
import secrets

__all__ = ["RequestIds"]

_FIRST = 10**14  # the first serial: 15 digits, the first never 0
_LENGTH = 32


class RequestIds:
    """One server process's request ids: :meth:`new` makes one, :meth:`serial` reads it back."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(9)[:17]
        #: The serial of the last id made (``_FIRST - 1`` before the first).
        self.last = _FIRST - 1
        self._counter = itertools.count(_FIRST)
        self._cut = len(self.prefix)

    def new(self) -> str:
        """A new id."""
        self.last = serial = next(self._counter)
        return self.prefix + str(serial)

    def serial(self, request_id: str) -> int | None:
        """The serial of an id this process made; None for any other id, a client's own
        included (one that copies this process's prefix gets None unless its serial is one
        already made, which names a request this process did answer)."""
        if len(request_id) != _LENGTH or not request_id.startswith(self.prefix):
            return None
        digits = request_id[self._cut :]
        if not (digits.isascii() and digits.isdigit()):  # int() also takes " 1", "+1", "1_0"
            return None
        serial = int(digits)
        return serial if _FIRST <= serial <= self.last else None
