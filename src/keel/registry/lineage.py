"""Lineage up and down: from any object to the objects it came from, or the ones it made.

The graph is read from what Keel already records: every step run's input and output artifacts
(the ``lineage`` table), each snapshot's source files and parent snapshot, each model version's
package and registering run, the aliases that point at a version, and the served predictions
that carry the model version they were answered by. Edges always point the way data flowed
(ancestor → descendant), whichever way the walk goes.

A step run that was a cache hit reads and writes the same artifacts as the run that made them;
the walk follows the run that produced an artifact (the first succeeded one), so a project run a
hundred times still has one path from a prediction to its data.

Nodes are named ``kind:key``: ``artifact:<sha256>``, ``run:<id>``, ``version:<name>@<n>``,
``alias:<name>@<alias>``, ``prediction:<request id>``, ``source:<path>``.

Example:
    >>> graph = trace(metadata, "california-housing@production", direction="up")
    >>> print(render_text(graph))
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import sqlalchemy as sa

from keel.errors import ConfigError, NotFoundError
from keel.store.metadata import MetadataStore
from keel.store.tables import aliases, artifacts, lineage, model_versions, runs

__all__ = [
    "Edge",
    "LineageGraph",
    "Node",
    "PredictionRecord",
    "PredictionSource",
    "render_dot",
    "render_text",
    "trace",
]

Direction = Literal["up", "down"]
_HEX = re.compile(r"^[0-9a-f]{6,64}$")
_PRODUCED = ("succeeded",)
_ARTIFACT_FACTS = (
    "rows",
    "source",
    "files",
    "parent",
    "split",
    "model",
)  # a cached run re-reads what a succeeded run produced


@dataclass(frozen=True)
class PredictionRecord:
    """What the prediction log holds about one served request."""

    request_id: str
    model: str
    version: int
    time: float
    rows: int
    pipeline: str | None = None
    role: str | None = None


class PredictionSource(Protocol):
    """Where lineage looks up served predictions (the prediction log)."""

    def find(self, request_id: str) -> PredictionRecord | None:
        """The request with this id, or None."""
        ...

    def of_version(self, model: str, version: int, limit: int) -> tuple[int, list[str]]:
        """How many requests a version answered, and the ids of the first ``limit``."""
        ...


@dataclass(frozen=True)
class Node:
    """One object in the lineage graph."""

    id: str
    kind: str
    label: str
    sha256: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "label": self.label, "sha256": self.sha256,
                "attributes": dict(self.attributes)}  # fmt: skip


@dataclass(frozen=True)
class Edge:
    """``source`` flowed into ``target``; ``relation`` says how."""

    source: str
    target: str
    relation: str

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "target": self.target, "relation": self.relation}


@dataclass(frozen=True)
class LineageGraph:
    """The objects reached from ``root`` walking ``direction``, and the edges between them."""

    root: str
    direction: Direction
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    truncated: bool = False

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def of_kind(self, kind: str) -> list[Node]:
        return [n for n in self.nodes if n.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "direction": self.direction, "truncated": self.truncated,
                "nodes": [n.to_json() for n in self.nodes],
                "edges": [e.to_json() for e in self.edges]}  # fmt: skip


def trace(
    metadata: MetadataStore,
    ref: str,
    *,
    direction: Direction = "up",
    predictions: PredictionSource | None = None,
    max_nodes: int = 500,
    prediction_limit: int = 20,
) -> LineageGraph:
    """Walk lineage from ``ref`` up to its ancestors or down to its descendants.

    Args:
        metadata: The project's metadata store.
        ref: An artifact sha256 (or a unique prefix of at least 6 hex digits), a run id (or
            prefix), ``NAME@VERSION``, ``NAME@ALIAS``, a served request id, or any of these with
            an explicit ``artifact:``/``run:``/``version:``/``alias:``/``prediction:`` prefix.
        direction: ``up`` (where it came from) or ``down`` (what it influenced).
        predictions: The prediction log; without it, predictions are neither found nor listed.
        max_nodes: Stop after this many nodes (the graph says it was truncated).
        prediction_limit: Served requests listed per model version on the way down (all are
            counted).

    Raises:
        NotFoundError: Nothing matches ``ref``.
        ConfigError: ``ref`` matches several objects, or ``direction`` is unknown.
    """
    if direction not in ("up", "down"):
        raise ConfigError(f"lineage direction must be 'up' or 'down', not {direction!r}")
    walker = _Walker(metadata, predictions, prediction_limit)
    root = walker.resolve(ref)
    step = walker.parents if direction == "up" else walker.children
    seen = {root.id: root}
    edges: dict[tuple[str, str], Edge] = {}
    queue = deque([root])
    truncated = False
    while queue:
        node = queue.popleft()
        for other, edge in step(node):
            edges[(edge.source, edge.target)] = edge
            if other.id in seen:
                continue
            if len(seen) >= max_nodes:
                truncated = True
                continue
            seen[other.id] = other
            queue.append(other)
    kept = tuple(e for e in edges.values() if e.source in seen and e.target in seen)
    return LineageGraph(root.id, direction, tuple(seen.values()), kept, truncated)


class _Walker:
    """One walk's reads of the store, each object fetched once."""

    def __init__(
        self, metadata: MetadataStore, predictions: PredictionSource | None, limit: int
    ) -> None:
        self.db = metadata.database
        self.predictions = predictions
        self.limit = limit

    # -- resolving the starting point ---------------------------------------------------------

    def resolve(self, ref: str) -> Node:
        ref = ref.strip()
        kind, _, key = ref.partition(":")
        explicit: dict[str, Callable[[str], Node | None]] = {
            "artifact": self._artifact_prefix,
            "run": self._run_prefix,
            "version": self._version_ref,
            "alias": self._version_ref,
            "prediction": self._prediction,
            "source": lambda path: _source(path),
        }
        if key and kind in explicit:
            found = explicit[kind](key)
            if found is None:
                raise NotFoundError(f"no {kind} {key!r} in this project's lineage")
            return found
        if "@" in ref:
            node = self._version_ref(ref)
            if node is None:
                raise NotFoundError(f"no model version {ref!r}: see `keel models list`")
            return node
        candidates = [
            n
            for n in (
                self._artifact_prefix(ref) if _HEX.match(ref) else None,
                self._run_prefix(ref) if _HEX.match(ref) else None,
                self._prediction(ref),
            )
            if n is not None
        ]
        if not candidates:
            searched = "artifacts, runs and served predictions"
            raise NotFoundError(
                f"nothing in {searched} matches {ref!r}; give an artifact sha256, a run id, "
                "NAME@VERSION, NAME@ALIAS or a request id"
            )
        if len(candidates) > 1:
            names = ", ".join(n.id for n in candidates)
            raise ConfigError(
                f"{ref!r} matches several objects ({names}); prefix it with the kind you mean, "
                f"e.g. {candidates[0].id.split(':')[0]}:{ref}"
            )
        return candidates[0]

    def _artifact_prefix(self, prefix: str) -> Node | None:
        prefix = prefix.lower()
        query = sa.select(artifacts).where(artifacts.c.sha256.startswith(prefix)).limit(2)
        with self.db.read() as conn:
            rows = list(conn.execute(query).mappings())
        if len(rows) > 1:
            raise ConfigError(f"artifact prefix {prefix!r} is ambiguous: give more digits")
        return _artifact_node(rows[0]) if rows else None

    def _run_prefix(self, prefix: str) -> Node | None:
        query = sa.select(runs).where(runs.c.id.startswith(prefix.lower())).limit(2)
        with self.db.read() as conn:
            rows = list(conn.execute(query).mappings())
        if len(rows) > 1:
            raise ConfigError(f"run prefix {prefix!r} is ambiguous: give more characters")
        return _run_node(rows[0]) if rows else None

    def _version_ref(self, ref: str) -> Node | None:
        name, _, tail = ref.rpartition("@")
        if not name or not tail:
            raise ConfigError(f"{ref!r} is not NAME@VERSION or NAME@ALIAS")
        if tail.isdigit():
            return self._version(name, int(tail))
        query = sa.select(aliases.c.version).where(aliases.c.name == name, aliases.c.alias == tail)
        with self.db.read() as conn:
            version = conn.execute(query).scalar()
        if version is None:
            return None
        return Node(f"alias:{name}@{tail}", "alias", f"{name}@{tail}",
                    attributes={"version": int(version)})  # fmt: skip

    def _version(self, name: str, version: int) -> Node | None:
        query = sa.select(model_versions).where(
            model_versions.c.name == name, model_versions.c.version == version
        )
        with self.db.read() as conn:
            row = conn.execute(query).mappings().first()
        return _version_node(row) if row is not None else None

    def _prediction(self, request_id: str) -> Node | None:
        if self.predictions is None:
            return None
        record = self.predictions.find(request_id)
        if record is None:
            return None
        attributes = {
            "model": record.model,
            "version": record.version,
            "time": record.time,
            "rows": record.rows,
            "pipeline": record.pipeline,
            "role": record.role,
        }
        return Node(f"prediction:{record.request_id}", "prediction",
                    f"request {record.request_id}", attributes=attributes)  # fmt: skip

    # -- one step up ---------------------------------------------------------------------------

    def parents(self, node: Node) -> Iterable[tuple[Node, Edge]]:
        kind, _, key = node.id.partition(":")
        if kind == "prediction":
            version = self._version(str(node.attributes["model"]), int(node.attributes["version"]))
            if version is not None:
                yield version, Edge(version.id, node.id, "answered")
        elif kind == "alias":
            name = key.rpartition("@")[0]
            version = self._version(name, int(node.attributes["version"]))
            if version is not None:
                yield version, Edge(version.id, node.id, "points to")
        elif kind == "version":
            package = self._artifact_prefix(str(node.sha256))
            if package is not None:
                yield package, Edge(package.id, node.id, "registered as")
        elif kind == "artifact":
            yield from self._artifact_parents(node)
        elif kind == "run":
            for artifact_node, name in self._run_edges(key, "input"):
                yield artifact_node, Edge(artifact_node.id, node.id, f"read as {name}")

    def _artifact_parents(self, node: Node) -> Iterable[tuple[Node, Edge]]:
        producer = self._producer(str(node.sha256))
        if producer is not None:
            yield producer, Edge(producer.id, node.id, "wrote")
        meta = node.attributes
        parent = meta.get("parent")
        if isinstance(parent, str) and parent:
            found = self._artifact_prefix(parent)
            if found is not None:
                relation = str(meta.get("parent_relation", "derived as"))
                yield found, Edge(found.id, node.id, relation)
        for path in meta.get("files") or ([meta["source"]] if meta.get("source") else []):
            source = _source(str(path))
            yield source, Edge(source.id, node.id, "read from")

    def _producer(self, sha256: str) -> Node | None:
        query = (
            sa.select(runs)
            .join(lineage, lineage.c.run_id == runs.c.id)
            .where(lineage.c.sha256 == sha256, lineage.c.direction == "output")
            .where(runs.c.status.in_(_PRODUCED))
            .order_by(runs.c.started_at)
            .limit(1)
        )
        with self.db.read() as conn:
            row = conn.execute(query).mappings().first()
        return _run_node(row) if row is not None else None

    def _run_edges(self, run_id: str, direction: str) -> list[tuple[Node, str]]:
        query = (
            sa.select(lineage.c.name, artifacts)
            .join(artifacts, artifacts.c.sha256 == lineage.c.sha256)
            .where(lineage.c.run_id == run_id, lineage.c.direction == direction)
            .order_by(lineage.c.name)
        )
        with self.db.read() as conn:
            return [
                (_artifact_node(row), str(row["name"])) for row in conn.execute(query).mappings()
            ]

    # -- one step down -------------------------------------------------------------------------

    def children(self, node: Node) -> Iterable[tuple[Node, Edge]]:
        kind, _, key = node.id.partition(":")
        if kind == "source":
            yield from self._snapshots_of(key, node)
        elif kind == "artifact":
            yield from self._artifact_children(node)
        elif kind == "run":
            for artifact_node, name in self._run_edges(key, "output"):
                yield artifact_node, Edge(node.id, artifact_node.id, f"wrote {name}")
        elif kind == "version":
            yield from self._version_children(node, key)

    def _artifact_children(self, node: Node) -> Iterable[tuple[Node, Edge]]:
        sha = str(node.sha256)
        query = (
            sa.select(runs)
            .join(lineage, lineage.c.run_id == runs.c.id)
            .where(lineage.c.sha256 == sha, lineage.c.direction == "input")
            .where(runs.c.status.in_(_PRODUCED))
            .order_by(runs.c.started_at)
        )
        versions = sa.select(model_versions).where(model_versions.c.package_sha256 == sha)
        appended = sa.select(artifacts).where(
            artifacts.c.kind == "snapshot", artifacts.c.metadata["parent"].as_string() == sha
        )
        with self.db.read() as conn:
            readers = list(conn.execute(query).mappings())
            registered = list(conn.execute(versions.order_by(model_versions.c.version)).mappings())
            later = list(conn.execute(appended).mappings())
        for row in readers:
            run = _run_node(row)
            yield run, Edge(node.id, run.id, "read by")
        for row in registered:
            version = _version_node(row)
            yield version, Edge(node.id, version.id, "registered as")
        for row in later:
            snapshot = _artifact_node(row)
            yield snapshot, Edge(node.id, snapshot.id, _parent_relation(row["metadata"] or {}))

    def _version_children(self, node: Node, key: str) -> Iterable[tuple[Node, Edge]]:
        name, _, number = key.rpartition("@")
        query = sa.select(aliases.c.alias).where(
            aliases.c.name == name, aliases.c.version == int(number)
        )
        with self.db.read() as conn:
            held = sorted(str(a) for a in conn.execute(query).scalars())
        for alias in held:
            alias_node = Node(f"alias:{name}@{alias}", "alias", f"{name}@{alias}",
                              attributes={"version": int(number)})  # fmt: skip
            yield alias_node, Edge(node.id, alias_node.id, "points to")
        if self.predictions is None:
            return
        count, request_ids = self.predictions.of_version(name, int(number), self.limit)
        for request_id in request_ids:
            found = self._prediction(request_id)
            if found is not None:
                yield found, Edge(node.id, found.id, "answered")
        if count > len(request_ids):
            more = Node(f"predictions:{name}@{number}", "predictions",
                        f"{count - len(request_ids)} more served requests",
                        attributes={"total": count})  # fmt: skip
            yield more, Edge(node.id, more.id, "answered")

    def _snapshots_of(self, path: str, node: Node) -> Iterable[tuple[Node, Edge]]:
        query = sa.select(artifacts).where(artifacts.c.kind == "snapshot")
        with self.db.read() as conn:
            rows = list(conn.execute(query.order_by(artifacts.c.recorded_at)).mappings())
        for row in rows:
            meta = row["metadata"] or {}
            if path in (meta.get("files") or []) or meta.get("source") == path:
                snapshot = _artifact_node(row)
                yield snapshot, Edge(node.id, snapshot.id, "read from")


def _artifact_node(row: sa.RowMapping) -> Node:
    meta = dict(row["metadata"] or {})
    sha = str(row["sha256"])
    keep = {
        k: meta[k] for k in ("rows", "source", "files", "parent", "split", "model") if k in meta
    }
    if meta.get("parent"):
        keep["parent_relation"] = _parent_relation(meta)
    keep["size"] = int(row["size"])
    return Node(f"artifact:{sha}", str(row["kind"]), f"{row['kind']} {sha[:12]}", sha, keep)


def _run_node(row: sa.RowMapping) -> Node:
    run_id = str(row["id"])
    started = row["started_at"]
    attributes = {"step": str(row["step"]), "status": str(row["status"]),
                  "started_at": started.isoformat() if started is not None else None}  # fmt: skip
    return Node(f"run:{run_id}", "run", f"run {row['step']} {run_id[:8]}", attributes=attributes)


def _version_node(row: sa.RowMapping) -> Node:
    name, version = str(row["name"]), int(row["version"])
    attributes = {"run": row["run_id"], "created_at": row["created_at"].isoformat()}
    return Node(f"version:{name}@{version}", "model_version", f"{name}@{version}",
                str(row["package_sha256"]), attributes)  # fmt: skip


def _source(path: str) -> Node:
    return Node(f"source:{path}", "source", f"source {path}")


# -- rendering ------------------------------------------------------------------------------------


def render_text(graph: LineageGraph) -> str:
    """The graph as an indented tree from its root; a node reached twice is shown once."""
    by_id = {n.id: n for n in graph.nodes}
    follow: dict[str, list[Edge]] = {}
    for edge in graph.edges:
        start, end = (
            (edge.target, edge.source) if graph.direction == "up" else (edge.source, edge.target)
        )
        follow.setdefault(start, []).append(Edge(start, end, edge.relation))
    lines = [_describe(by_id[graph.root])]
    shown = {graph.root}

    def walk(node_id: str, indent: str) -> None:
        children = follow.get(node_id, [])
        for i, edge in enumerate(children):
            last = i == len(children) - 1
            branch, extend = ("└─ ", "   ") if last else ("├─ ", "│  ")
            child = by_id[edge.target]
            again = child.id in shown
            suffix = " (shown above)" if again else ""
            relation = _upward(edge.relation) if graph.direction == "up" else edge.relation
            lines.append(f"{indent}{branch}{relation}: {_describe(child)}{suffix}")
            if not again:
                shown.add(child.id)
                walk(child.id, indent + extend)

    walk(graph.root, "")
    if graph.truncated:
        lines.append(f"(stopped after {len(graph.nodes)} objects: pass a larger --max-nodes)")
    return "\n".join(lines)


def _parent_relation(metadata: dict[str, Any]) -> str:
    """How a snapshot relates to its ``parent``: an incremental ingestion (its metadata has the
    ingestion's ``bad_rows``) or a retraining (``retrain``) appended rows to it; a split, a
    feature-view join or a custom step's table was derived from it."""
    appended = "bad_rows" in metadata or "retrain" in metadata
    return "appended to" if appended else "derived as"


def _upward(relation: str) -> str:
    """An edge's relation read from the descendant's side (``wrote`` → ``written by``)."""
    if relation.startswith("read as "):
        return "input " + relation.removeprefix("read as ")
    words = {"answered": "answered by", "points to": "alias of", "registered as": "package",
             "wrote": "written by", "appended to": "appends to",
             "derived as": "derived from"}  # fmt: skip
    return words.get(relation, relation)


def _describe(node: Node) -> str:
    extra = []
    attrs = node.attributes
    if node.kind == "run":
        extra.append(str(attrs.get("status")))
    elif node.kind == "model_version" and node.sha256:
        extra.append(f"package {node.sha256[:12]}")
    elif node.kind == "prediction":
        extra.append(f"{attrs.get('model')}@{attrs.get('version')}, {attrs.get('rows')} rows")
    elif node.kind == "alias":
        extra.append(f"version {attrs.get('version')}")
    elif "rows" in attrs:
        extra.append(f"{attrs['rows']} rows")
    return node.label + (f" ({', '.join(extra)})" if extra else "")


def render_dot(graph: LineageGraph) -> str:
    """The graph in Graphviz DOT, edges in data-flow direction."""
    shapes = {"run": "box", "model_version": "component", "alias": "tag", "prediction": "note",
              "source": "folder", "predictions": "note"}  # fmt: skip
    lines = ["digraph lineage {", "  rankdir=LR;"]
    for node in graph.nodes:
        shape = shapes.get(node.kind, "ellipse")
        style = ", style=bold" if node.id == graph.root else ""
        lines.append(
            f"  {_quote(node.id)} [label={_quote(_describe(node))}, shape={shape}{style}];"
        )
    for edge in graph.edges:
        lines.append(
            f"  {_quote(edge.source)} -> {_quote(edge.target)} [label={_quote(edge.relation)}];"
        )
    lines.append("}")
    return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
