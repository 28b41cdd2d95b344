"""Telling one process from another on this host, in a way no clock change disturbs.

A run records its owner as host, pid and start (:mod:`keel.store.leases`). A pid is reused
once its process is gone, so the start tells the owner from a later process with its pid. The
start is read in the kernel's clock ticks since boot (``/proc/PID/stat``), together with the
boot's id: a start in seconds since the epoch is derived from the boot time, which moves each
time the clock is stepped (NTP, a virtual machine resumed from a snapshot), so a live owner
could look like a stranger. Systems without ``/proc`` fall back to the epoch start.

Imports nothing heavy: the no-op rerun (:mod:`keel.pipeline.noop`) records owners too.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

__all__ = ["identity", "process_start_time", "this_boot", "this_host", "ticks_since_boot"]


@functools.cache
def this_host() -> str:
    """This machine's host name (what runs record as their owner's host)."""
    return socket.gethostname() or "localhost"


@functools.cache
def this_boot() -> str | None:
    """This host's boot id (Linux), which changes at every boot; None where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def ticks_since_boot(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since boot: ``/proc/PID/stat``'s field 22, in
    clock ticks, which no clock change moves. None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])  # fields 3.. follow the name
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch; None when there is none.

    The figure moves when the clock is stepped: tell processes apart with :func:`identity`.
    """
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def identity(pid: int) -> tuple[float | None, str | None]:
    """Process ``pid``'s start and this host's boot id, as runs record their owner: seconds
    since boot with the boot id where ``/proc`` tells them, else (epoch seconds, None)."""
    boot = this_boot()
    since_boot = None if boot is None else ticks_since_boot(pid)
    if since_boot is not None:
        return since_boot, boot
    return process_start_time(pid), None
