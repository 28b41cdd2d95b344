"""Atomic writes through temporary files: every writer has its own (no fixed ``.X.tmp``), so
concurrent writers never trip over each other, and none is left behind."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from keel.validate.schema import Schema, read_schema, write_schema


def test_concurrent_schema_writers_each_use_their_own_temp_file(
    tmp_path: Path, adult_schema: Schema
) -> None:
    path = tmp_path / "schema.yaml"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer() -> None:
        start.wait()
        try:
            for _ in range(20):
                write_schema(adult_schema, path)
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert read_schema(path) == adult_schema
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schema.yaml"]


def test_a_failed_schema_write_leaves_no_temp_file(
    tmp_path: Path, adult_schema: Schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(schema: Any) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(sys.modules[write_schema.__module__], "schema_to_yaml", broken)
    with pytest.raises(OSError, match="disk full"):
        write_schema(adult_schema, tmp_path / "schema.yaml")
    assert list(tmp_path.iterdir()) == []
