"""Text encodings of source files: detect one, and hand DuckDB files it can decode.

DuckDB decodes UTF-8, UTF-16 and Latin-1 itself (and reports undecodable bytes as bad rows with
their line numbers). A file in any other encoding is transcoded to a temporary UTF-8 copy in
fixed-size chunks first, so memory stays bounded and line numbers stay the same.

DuckDB's CSV sniffer also gives up on a file whose lines end in both ``\r\n`` and ``\n`` (a
file written by Python's ``csv`` module, which ends lines with ``\r\n``, with lines appended by
``echo``). Such a file gets a copy with every line ending ``\n``: line numbers stay the same.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from charset_normalizer import from_bytes

from keel.errors import ConfigError, DataValidationError

__all__ = ["detect_encoding", "readable_files", "uniform_newlines"]

SAMPLE_BYTES = 1 << 16
_CHUNK_CHARS = 1 << 20
_CHUNK_BYTES = 1 << 20
#: DuckDB encodings in which a line ending is the bytes ``\r\n`` or ``\n``.
_ASCII_NEWLINES = frozenset({"utf-8", "latin-1"})
#: Python codec name -> the name DuckDB's read_csv takes.
_NATIVE = {"utf-8": "utf-8", "ascii": "utf-8", "utf-8-sig": "utf-8", "latin-1": "latin-1"}
_NATIVE |= {"utf-16": "utf-16", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}


def detect_encoding(file: Path) -> str:
    """The encoding of a text file, guessed from its first 64 KiB.

    A sample that decodes as UTF-8 (or mostly does, with more valid multi-byte characters than
    broken bytes) is UTF-8: its broken bytes become bad rows rather than a wrong guess. Anything
    else is left to charset-normalizer.

    Args:
        file: The file to look at.

    Returns:
        A Python codec name, e.g. ``utf-8`` or ``cp1252``.
    """
    with file.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(sample, final=False)
    broken = text.count("\ufffd")
    multibyte = sum(1 for char in set(text) if ord(char) > 127) - (1 if broken else 0)
    if broken == 0 or multibyte >= broken:
        return "utf-8"
    best = from_bytes(sample).best()
    return _canonical(best.encoding) if best is not None else "utf-8"


def readable_files(files: list[Path], encoding: str, workdir: Path) -> tuple[str, list[Path]]:
    """The DuckDB encoding name and files for it: the originals, or UTF-8 copies in ``workdir``.

    Raises:
        ConfigError: ``encoding`` is not a codec Python knows.
        DataValidationError: A file cannot be decoded with ``encoding``.
    """
    codec = _canonical(encoding)
    if codec in _NATIVE:
        return _NATIVE[codec], files
    copies = []
    for i, file in enumerate(files):
        copy = workdir / f"transcoded-{i}.csv"
        _transcode(file, codec, copy)
        copies.append(copy)
    return "utf-8", copies


def _canonical(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError as exc:
        msg = f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or cp1252."
        raise ConfigError(msg, field="encoding") from exc
    return {"iso8859-1": "latin-1", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}.get(name, name)


def _transcode(file: Path, codec: str, target: Path) -> None:
    # newline="" keeps every line ending as it is, so line numbers match the original file
    try:
        with (
            file.open(encoding=codec, newline="") as src,
            target.open("w", encoding="utf-8", newline="") as dst,
        ):
            while chunk := src.read(_CHUNK_CHARS):
                dst.write(chunk)
    except UnicodeDecodeError as exc:
        msg = (
            f"{file}: cannot be decoded as {codec} ({exc.reason}). "
            "Set the source's 'encoding' in keel.yaml to the file's real encoding."
        )
        raise DataValidationError(msg) from exc


def uniform_newlines(files: list[Path], encoding: str, workdir: Path) -> list[Path]:
    """``files``, each one whose lines end in both ``\r\n`` and ``\n`` replaced by a copy in
    ``workdir`` whose lines all end in ``\n`` (the rest unchanged, so line numbers match).

    Args:
        files: The files DuckDB is to read.
        encoding: Their DuckDB encoding; only UTF-8 and Latin-1 files are looked at.
        workdir: Where the copies go.

    Returns:
        The files to read, in the same order.
    """
    if encoding not in _ASCII_NEWLINES:
        return files
    uniform = []
    for i, file in enumerate(files):
        if _mixed_newlines(file):
            copy = workdir / f"newlines-{i}.csv"
            _strip_carriage_returns(file, copy)
            file = copy
        uniform.append(file)
    return uniform


def _mixed_newlines(file: Path) -> bool:
    crlf = lf = 0
    last = b""
    with file.open("rb") as src:
        while chunk := src.read(_CHUNK_BYTES):
            joined = last + chunk  # a \r\n split across two chunks is counted once
            crlf += joined.count(b"\r\n") - last.count(b"\r\n")
            lf += chunk.count(b"\n")
            last = chunk[-1:]
            if crlf and lf > crlf:
                return True
    return False


def _strip_carriage_returns(file: Path, target: Path) -> None:
    with file.open("rb") as src, target.open("wb") as dst:
        pending = b""
        while chunk := src.read(_CHUNK_BYTES):
            chunk = pending + chunk
            # a trailing \r may start a \r\n that the next chunk completes
            pending = chunk[-1:] if chunk.endswith(b"\r") else b""
            dst.write(chunk[: len(chunk) - len(pending)].replace(b"\r\n", b"\n"))
        dst.write(pending)
