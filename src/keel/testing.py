"""Public contract suites for Keel's seams (stores, trainer flavors, tasks), reusable by
plugin authors.

Each suite is a class of ``test_*`` methods that take one argument, ``store``. Use it with
pytest by subclassing and providing a ``store`` fixture::

    import pytest
    from keel.store import ArtifactStore
    from keel.testing import ArtifactStoreContract

    class TestMyBucket(ArtifactStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            return ArtifactStore("mybucket://test-" + tmp_path.name)

or without pytest, with ``check_artifact_store(make_store)`` and
``check_metadata_store(make_store)``, which run every check on a fresh store and raise
``AssertionError`` naming the check that failed. The suites need nothing beyond Keel itself.

Trainer flavors and tasks (built-in or plug-in) have :class:`TrainerContract` and
:class:`TaskContract`, with ``check_trainer_plugin(cls, kinds=...)`` and
``check_task_plugin(task, target_values)`` (see :mod:`keel.train.contract`).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import fsspec

from keel.errors import ConfigError, ConflictError, IntegrityError, NotFoundError
from keel.store.artifacts import CHUNK_SIZE, ArtifactStore
from keel.store.metadata import MetadataStore
from keel.store.tracking_tables import Condition, Order
from keel.train.contract import (
    TaskContract,
    TrainerContract,
    check_task_plugin,
    check_trainer_plugin,
)
from keel.types import Artifact, LineageEdge, Run

__all__ = [
    "ArtifactStoreContract",
    "MetadataStoreContract",
    "TaskContract",
    "TrainerContract",
    "check_artifact_store",
    "check_metadata_store",
    "check_task_plugin",
    "check_trainer_plugin",
    "postgres_schema",
]

_S = TypeVar("_S")


class ArtifactStoreContract:
    """What every ``ArtifactStore`` root (local, ``memory://``, ``s3://``, ...) must do."""

    def test_put_get_round_trip(self, store: ArtifactStore) -> None:
        """Bytes come back unchanged and the artifact describes them."""
        for data in (b"hello keel", b"", bytes(range(256)) * 10):
            art = store.put(data, kind="test", metadata={"rows": 3})
            assert art.sha256 == hashlib.sha256(data).hexdigest()
            assert (art.kind, art.size, art.metadata) == ("test", len(data), {"rows": 3})
            assert art.uri == store.uri(art.sha256)
            assert art.uri.endswith(f"sha256/{art.sha256[:2]}/{art.sha256}")
            assert store.exists(art.sha256)
            assert store.get(art.sha256) == data
            store.verify(art.sha256)

    def test_put_file_streams_large_file(self, store: ArtifactStore) -> None:
        """A file bigger than one chunk is stored whole and gives the same artifact as bytes."""
        data = bytes(range(251)) * (CHUNK_SIZE * 2 // 251 + 7)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "big.bin"
            path.write_bytes(data)
            from_file = store.put(path, kind="snapshot")
        assert from_file == store.put(data, kind="snapshot")
        assert from_file.size == len(data)
        assert store.get(from_file.sha256) == data
        assert store.local_path(from_file.sha256).read_bytes() == data

    def test_put_is_idempotent(self, store: ArtifactStore) -> None:
        """Putting the same bytes twice gives one blob; a stored blob that no longer hashes to
        its name is repaired by the next put of the true bytes, never kept."""
        first = store.put(b"same bytes", kind="test")
        assert store.put(b"same bytes", kind="test") == first
        assert list(store.iter_hashes()) == [first.sha256]
        _flip_byte(first.uri)
        with _raises(IntegrityError):
            store.get(first.sha256)
        assert store.put(b"same bytes", kind="test") == first
        assert store.get(first.sha256) == b"same bytes"
        assert list(store.iter_hashes()) == [first.sha256]

    def test_corruption_is_detected(self, store: ArtifactStore) -> None:
        """A flipped byte makes get, verify and local_path raise IntegrityError."""
        art = store.put(b"precious model weights", kind="model-file")
        _flip_byte(art.uri)
        for read in (store.get, store.verify, store.local_path):
            with _raises(IntegrityError) as caught:
                read(art.sha256)
            assert art.sha256 in str(caught.error) and art.uri in str(caught.error)

    def test_missing_blob_is_not_found(self, store: ArtifactStore) -> None:
        """Reading an absent hash raises NotFoundError; exists says False."""
        sha = hashlib.sha256(b"never stored").hexdigest()
        assert not store.exists(sha)
        for read in (store.get, store.verify, store.local_path):
            with _raises(NotFoundError):
                read(sha)

    def test_failed_write_leaves_no_blob(self, store: ArtifactStore) -> None:
        """A source that fails midway leaves nothing under a sha256 name."""
        source = _FailingSource(chunks=3)
        with _raises(OSError):
            store.put(source, kind="test")
        assert list(store.iter_hashes()) == []
        for partial in source.prefixes():
            assert not store.exists(hashlib.sha256(partial).hexdigest())

    def test_iter_hashes_lists_every_blob(self, store: ArtifactStore) -> None:
        """iter_hashes yields each stored sha256 once."""
        shas = {store.put(f"blob {i}".encode(), kind="test").sha256 for i in range(5)}
        listed = list(store.iter_hashes())
        assert sorted(listed) == sorted(shas)

    def test_bad_hash_is_rejected(self, store: ArtifactStore) -> None:
        """Something that is not a sha256 raises ConfigError, not a path lookup."""
        for bad in ("../../etc/passwd", "abc", "z" * 64):
            with _raises(ConfigError):
                store.get(bad)


class MetadataStoreContract:
    """What every ``MetadataStore`` database (SQLite, PostgreSQL, ...) must do."""

    def test_artifact_round_trip(self, store: MetadataStore) -> None:
        """Recorded artifacts come back; recording twice is a no-op."""
        art = _artifact("data", metadata={"rows": 10})
        store.record_artifact(art)
        store.record_artifact(art)
        got = store.get_artifact(art.sha256)
        assert got == art and got.metadata == {"rows": 10}
        assert store.list_artifacts() == [art]
        assert store.list_artifacts(kind="other") == []
        with _raises(NotFoundError):
            store.get_artifact(_sha("absent"))

    def test_prefix_lookup(self, store: MetadataStore) -> None:
        """A unique prefix of 6+ hex digits finds an artifact or run; ambiguity is an error."""
        one, two = "abcdef" + "0" * 58, "abcdef" + "1" * 58
        for sha in (one, two):
            store.record_artifact(Artifact("test", f"memory://t/{sha}", sha, 1))
        assert store.get_artifact("abcdef0").sha256 == one
        with _raises(NotFoundError, match="ambiguous"):
            store.get_artifact("abcdef")
        with _raises(ConfigError):
            store.get_artifact("abcde")
        run = store.start_run("ingest", cache_key="k", config_hash="c", code_version="v")
        assert store.get_run(run.id[:8]).id == run.id
        with _raises(NotFoundError):
            store.get_run("ffffff" if not run.id.startswith("ffffff") else "000000")

    def test_run_lifecycle(self, store: MetadataStore) -> None:
        """start_run then finish_run records status, resources, params and lineage."""
        data, model = _artifact("data"), _artifact("model")
        run = store.start_run(
            "train", cache_key="k1", config_hash="c", code_version="v", params={"lr": 0.1}
        )
        assert run.status == "running" and len(run.id) == 32 and run.ended_at is None
        assert run.started_at.tzinfo is not None and run.started_at.utcoffset() == timedelta(0)
        done = store.finish_run(
            run.id,
            status="succeeded",
            inputs={"data": data.sha256},
            outputs={"model": model.sha256},
            cpu_seconds=1.5,
            peak_memory_mb=42.0,
            params={"trees": 100},
        )
        assert done.status == "succeeded" and done.ended_at is not None
        assert done.ended_at.tzinfo is not None and done.ended_at >= done.started_at
        assert (done.cpu_seconds, done.peak_memory_mb) == (1.5, 42.0)
        assert done.params == {"lr": 0.1, "trees": 100}
        assert done.inputs == {"data": data.sha256} and done.outputs == {"model": model.sha256}
        got = store.get_run(run.id)
        assert (got.status, got.inputs, got.outputs) == ("succeeded", done.inputs, done.outputs)
        assert abs(got.started_at - run.started_at) < timedelta(seconds=1)
        with _raises(ConflictError):
            store.finish_run(run.id, status="failed")
        with _raises(NotFoundError):
            store.finish_run("0" * 32, status="failed")

    def test_list_runs_newest_first(self, store: MetadataStore) -> None:
        """list_runs orders by start time, newest first, and filters by step."""
        ids = [
            store.start_run(step, cache_key="k", config_hash="c", code_version="v").id
            for step in ("ingest", "train", "ingest")
        ]
        assert [r.id for r in store.list_runs()] == ids[::-1]
        assert [r.id for r in store.list_runs(step="ingest")] == [ids[2], ids[0]]
        assert len(store.list_runs(limit=1)) == 1

    def test_cached_run_lookup(self, store: MetadataStore) -> None:
        """Only the newest succeeded run whose outputs are all recorded is a cache hit."""
        out = _artifact("out")
        store.record_artifact(out)
        assert store.find_cached_run("key") is None
        hit = _finished(store, "key", "succeeded", {"out": out.sha256})
        _finished(store, "key", "failed", {"out": out.sha256})
        _finished(store, "key", "cached", {"out": out.sha256})
        _finished(store, "key", "succeeded", {"out": _sha("never recorded")})
        store.start_run("step", cache_key="key", config_hash="c", code_version="v")
        found = store.find_cached_run("key")
        assert found is not None and found.id == hit.id and found.outputs == hit.outputs
        newer = _finished(store, "key", "succeeded", {"out": out.sha256})
        found = store.find_cached_run("key")
        assert found is not None and found.id == newer.id
        assert store.find_cached_run("other key") is None

    def test_lineage_edges(self, store: MetadataStore) -> None:
        """lineage(sha) lists the run that wrote an artifact and every run that read it."""
        raw, feats = _artifact("raw"), _artifact("features")
        writer = _finished(store, "k1", "succeeded", {"table": raw.sha256})
        reader = _finished(store, "k2", "succeeded", {"features": feats.sha256}, {"t": raw.sha256})
        assert store.lineage(raw.sha256) == [
            LineageEdge(writer.id, raw.sha256, "output", "table"),
            LineageEdge(reader.id, raw.sha256, "input", "t"),
        ]
        assert store.lineage(feats.sha256) == [
            LineageEdge(reader.id, feats.sha256, "output", "features")
        ]
        assert store.lineage(_sha("unused")) == []

    def test_versions_increment(self, store: MetadataStore) -> None:
        """Each registration gets max + 1, is readable, and is audited."""
        run = _finished(store, "k", "succeeded", {})
        versions = [
            store.register_model_version(
                "churn", package_sha256=_sha(f"pkg{i}"), run_id=run.id, metrics={"step": i}
            )
            for i in range(3)
        ]
        assert [v.version for v in versions] == [1, 2, 3]
        got = store.get_model_version("churn", 2)
        assert (got.package_sha256, got.run_id, got.metrics) == (_sha("pkg1"), run.id, {"step": 1})
        assert got.created_at.tzinfo is not None
        assert [v.version for v in store.list_versions("churn")] == [1, 2, 3]
        other = store.register_model_version(
            "other", package_sha256=_sha("x"), run_id=None, metrics={}
        )
        assert other.version == 1
        audit = [(a["action"], a["details"]["version"]) for a in store.list_audit(target="churn")]
        assert audit == [("register", 3), ("register", 2), ("register", 1)]
        with _raises(NotFoundError):
            store.register_model_version(
                "churn", package_sha256=_sha("p"), run_id="f" * 32, metrics={}
            )
        with _raises(NotFoundError, match="versions: 1, 2, 3"):
            store.get_model_version("churn", 9)

    def test_alias_move_is_audited(self, store: MetadataStore) -> None:
        """Moving an alias records the previous version; deleting it is audited too."""
        _register(store, "m", 3)
        store.set_alias("m", "production", 1, actor="alice", reason="first")
        store.set_alias("m", "production", 2, actor="bob", reason="better auc")
        assert store.get_model_version("m", 2).aliases == ("production",)
        assert store.get_model_version("m", 1).aliases == ()
        moved = store.list_audit(target="m", limit=1)[0]
        assert (moved["action"], moved["actor"]) == ("set_alias", "bob")
        assert moved["details"]["previous_version"] == 1 and moved["details"]["version"] == 2
        assert moved["at"].tzinfo is not None
        with _raises(NotFoundError):
            store.set_alias("m", "production", 7)
        with _raises(ConfigError):
            store.set_alias("m", "latest", 1)
        store.delete_alias("m", "production", actor="carol")
        deleted = store.list_audit(target="m", limit=1)[0]
        assert (deleted["action"], deleted["actor"]) == ("delete_alias", "carol")
        assert deleted["details"]["previous_version"] == 2
        with _raises(NotFoundError):
            store.delete_alias("m", "production")

    def test_resolve_semantics(self, store: MetadataStore) -> None:
        """name -> production or latest; name@N; name@latest; name@alias; helpful misses."""
        _register(store, "m", 3)
        assert store.resolve("m").version == 3
        store.set_alias("m", "production", 1)
        store.set_alias("m", "staging", 2)
        assert store.resolve("m").version == 1
        assert store.resolve("m").aliases == ("production",)
        assert store.resolve("m@3").version == 3
        assert store.resolve("m@latest").version == 3
        assert store.resolve("m@staging").version == 2
        with _raises(NotFoundError, match="known models: m"):
            store.resolve("nope")
        with _raises(NotFoundError, match="versions: 1, 2, 3"):
            store.resolve("m@9")
        with _raises(NotFoundError, match="production -> 1, staging -> 2"):
            store.resolve("m@canary")
        with _raises(ConfigError):
            store.resolve("m@")

    def test_list_models(self, store: MetadataStore) -> None:
        """list_models summarises each model."""
        assert store.list_models() == []
        _register(store, "b", 2)
        _register(store, "a", 1)
        store.set_alias("b", "production", 1)
        summary = store.list_models()
        assert [m["name"] for m in summary] == ["a", "b"]
        b = summary[1]
        assert (b["latest_version"], b["versions"], b["aliases"]) == (2, 2, {"production": 1})
        assert b["created_at"].tzinfo is not None

    def test_concurrent_registration(self, store: MetadataStore) -> None:
        """Registrations racing from threads all succeed with distinct versions."""
        start = threading.Barrier(8)

        def register(i: int) -> list[int]:
            start.wait()
            return [
                store.register_model_version(
                    "race", package_sha256=_sha(f"{i}-{j}"), run_id=None, metrics={}
                ).version
                for j in range(5)
            ]

        with ThreadPoolExecutor(max_workers=8) as pool:
            versions = [v for batch in pool.map(register, range(8)) for v in batch]
        assert sorted(versions) == list(range(1, 41))
        assert [v.version for v in store.list_versions("race")] == list(range(1, 41))

    def test_tracked_facts_are_queryable(self, store: MetadataStore) -> None:
        """facts["params"/"metrics"/"history"/"tags"] are stored, filtered and sorted on."""
        snapshot = Artifact("snapshot", "memory://contract/s", _sha("snap"), 4)
        store.record_artifact(snapshot)
        ids = []
        for i, auc in enumerate((0.95, 0.80, 0.91, float("nan"))):
            run = store.start_run("train", cache_key=f"k{i}", config_hash="c", code_version="v")
            facts = {
                "params": {"num_leaves": 16 * (i + 1), "boosting": "gbdt", "opt": {"lr": 0.1}},
                "metrics": {"roc_auc": auc, "rows": 100, "note": "text is not a metric"},
                "history": {"validation": {"auc": [0.7, 0.8, auc]}},
                "tags": {"team": "a" if i % 2 else "b"},
                "best_iteration": 3,
            }
            store.finish_run(run.id, status="succeeded", inputs={"data": snapshot.sha256},
                             facts=facts)  # fmt: skip
            ids.append(run.id)
        store.start_run("ingest", cache_key="x", config_hash="c", code_version="v")

        def ids_of(*conditions: Condition, order: tuple[Order, ...] = ()) -> list[str]:
            return [t.run.id for t in store.search_runs(conditions, order=order)]

        by_auc = (Order("metrics", "roc_auc", descending=True),)
        assert ids_of(Condition("metrics", "roc_auc", ">", 0.9), order=by_auc) == [ids[0], ids[2]]
        assert ids_of(Condition("params", "num_leaves", "<=", 32)) == [ids[1], ids[0]]
        assert ids_of(Condition("params", "boosting", "=", "gbdt"), order=by_auc) == [
            ids[0], ids[2], ids[1]
        ]  # fmt: skip
        by_leaves = (Order("params", "num_leaves", descending=True),)
        assert ids_of(order=by_leaves) == ids[::-1]
        assert ids_of(Condition("params", "opt.lr", "=", 0.1), order=by_auc)[0] == ids[0]
        assert set(ids_of(Condition("tags", "team", "=", "a"))) == {ids[1], ids[3]}
        assert len(ids_of(Condition("run", "step", "in", ("train", "ingest")))) == 5
        assert ids_of(Condition("run", "status", "=", "running")) != []
        assert ids_of(Condition("metrics", "note", "=", 1.0)) == []
        tracked = store.get_tracked_run(ids[0][:8])
        assert tracked.params == {"num_leaves": 16, "boosting": "gbdt", "opt.lr": 0.1}
        assert tracked.metrics == {"roc_auc": 0.95, "rows": 100.0}
        assert tracked.history == {"validation.auc": [0.7, 0.8, 0.95]}
        assert tracked.tags == {"team": "b"} and tracked.snapshots == {"data": snapshot.sha256}
        assert tracked.duration_seconds is not None and tracked.duration_seconds >= 0
        assert store.get_tracked_run(ids[3]).metrics["roc_auc"] is None
        assert tracked.run.params["facts"]["best_iteration"] == 3
        assert "history" not in tracked.run.params["facts"]

    def test_every_run_records_its_environment(self, store: MetadataStore) -> None:
        """start_run captures the environment (or takes one); equal environments are shared."""
        first = store.start_run("a", cache_key="k", config_hash="c", code_version="v")
        given = {"python": "3.0", "packages": {}}
        second = store.start_run(
            "b", cache_key="k", config_hash="c", code_version="v", environment=given,
            tags={"owner": "me"},
        )  # fmt: skip
        env = store.get_tracked_run(first.id).environment
        assert env is not None and env["python"].count(".") == 2 and "numpy" in env["packages"]
        assert store.get_tracked_run(second.id).environment == given
        assert store.get_tracked_run(second.id).tags == {"owner": "me"}
        store.finish_run(second.id, status="succeeded", facts={"tags": {"owner": "you", "x": 1}})
        assert store.get_tracked_run(second.id).tags == {"owner": "you", "x": "1"}
        with _raises(ConfigError, match="facts['metrics']"):
            store.finish_run(first.id, status="succeeded", facts={"metrics": [0.9]})
        assert store.get_run(first.id).status == "running"

    def test_runs_racing_to_record_one_environment(self, store: MetadataStore) -> None:
        """Parallel first runs with the same new environment all start; it is stored once."""
        start = threading.Barrier(6)
        env = {"python": "race", "packages": {"keel": "0"}}

        def begin(i: int) -> str:
            start.wait()
            return store.start_run(f"t{i}", cache_key="k", config_hash="c", code_version="v",
                                   environment=env).id  # fmt: skip

        with ThreadPoolExecutor(max_workers=6) as pool:
            ids = list(pool.map(begin, range(6)))
        assert all(store.get_tracked_run(i).environment == env for i in ids)

    def test_audit_log(self, store: MetadataStore) -> None:
        """audit appends entries; list_audit filters by target, newest first."""
        store.audit("deploy", "churn", actor="ci", details={"replicas": 2})
        store.audit("rollback", "churn")
        store.audit("deploy", "fraud")
        entries = store.list_audit(target="churn")
        assert [e["action"] for e in entries] == ["rollback", "deploy"]
        assert entries[1]["actor"] == "ci" and entries[1]["details"] == {"replicas": 2}
        assert entries[0]["actor"] == "keel" and entries[0]["details"] == {}
        assert len(store.list_audit()) == 3 and len(store.list_audit(limit=2)) == 2
        assert entries[0]["at"].astimezone(UTC) >= entries[1]["at"]


def check_artifact_store(make_store: Callable[[], ArtifactStore]) -> None:
    """Run every ``ArtifactStoreContract`` check, each on a fresh store from ``make_store``.

    Raises:
        AssertionError: A check failed; the message names it.
    """
    _run_suite(ArtifactStoreContract(), make_store, lambda _store: None)


def check_metadata_store(make_store: Callable[[], MetadataStore]) -> None:
    """Run every ``MetadataStoreContract`` check on a fresh, empty store, closing it after.

    Raises:
        AssertionError: A check failed; the message names it.
    """
    _run_suite(MetadataStoreContract(), make_store, MetadataStore.close)


def _run_suite(suite: object, make: Callable[[], _S], close: Callable[[_S], None]) -> None:
    for name in sorted(n for n in dir(suite) if n.startswith("test_")):
        store = make()
        try:
            getattr(suite, name)(store)
        except AssertionError as exc:
            raise AssertionError(f"{type(suite).__name__}.{name} failed: {exc}") from exc
        finally:
            close(store)


class _Caught:
    error: BaseException | None = None


@contextlib.contextmanager
def _raises(kind: type[BaseException], match: str | None = None) -> Iterator[_Caught]:
    """pytest.raises without pytest, so plugin authors can run the suites anywhere."""
    caught = _Caught()
    try:
        yield caught
    except kind as exc:
        caught.error = exc
        if match is not None:
            assert match in str(exc), f"expected {match!r} in the message {str(exc)!r}"
    else:
        raise AssertionError(f"expected {kind.__name__} to be raised")


class _FailingSource:
    """A readable stream that fails after a few chunks, like a dropped connection."""

    def __init__(self, chunks: int) -> None:
        self._left = chunks
        self._seen = b""

    def read(self, size: int, /) -> bytes:
        if self._left == 0:
            raise ConnectionResetError("simulated crash in the middle of a put")
        self._left -= 1
        chunk = bytes([self._left % 256]) * min(size, 1000)
        self._seen += chunk
        return chunk

    def prefixes(self) -> Iterator[bytes]:
        for end in range(0, len(self._seen) + 1, 1000):
            yield self._seen[:end]


def _flip_byte(uri: str) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    data = bytearray(fs.cat_file(path)) or bytearray(b"\0")
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(path, bytes(data))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _artifact(name: str, metadata: dict[str, Any] | None = None) -> Artifact:
    sha = _sha(name)
    return Artifact("test", f"memory://contract/{sha}", sha, len(name), metadata or {})


def _finished(
    store: MetadataStore,
    cache_key: str,
    status: Literal["succeeded", "failed", "cached"],
    outputs: dict[str, str],
    inputs: dict[str, str] | None = None,
) -> Run:
    run = store.start_run("step", cache_key=cache_key, config_hash="c", code_version="v")
    return store.finish_run(run.id, status=status, outputs=outputs, inputs=inputs or {})


def _register(store: MetadataStore, name: str, count: int) -> None:
    for i in range(count):
        store.register_model_version(
            name, package_sha256=_sha(f"{name}{i}"), run_id=None, metrics={"i": i}
        )


@contextlib.contextmanager
def postgres_schema(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test: yields a URL that selects it, drops it after.

    Args:
        admin_url: A SQLAlchemy URL of a database the caller may create schemas in
            (CI passes ``KEEL_TEST_POSTGRES_URL``).
    """
    import uuid

    import sqlalchemy as sa

    name = f"keel_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        url = sa.make_url(admin_url).update_query_dict({"options": f"-csearch_path={name}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()
