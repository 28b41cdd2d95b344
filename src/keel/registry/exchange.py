"""Move a model package between registries (dev -> prod): one tar archive out, verified in.

An export archive (plain tar) holds::

    keel-model.json      the manifest (every file's sha256), byte for byte as registered
    keel-model.sig       its signature, when the package was signed
    lineage.json         the lineage summary: source version, run, data snapshots, metrics
    files/<name>         each file the manifest lists

Import reads the archive defensively before trusting any of it: only regular files with those
names (no absolute paths, no ``..``, no links or devices), at most :data:`MAX_MEMBERS` members
and :data:`MAX_BYTES` in all; then it verifies hashes, the signature (when
``registry.require_signature`` is on, or when a trusted key's signature does not match) and the
model file's types, and only then stores the files and registers a new version.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from keel.errors import ConfigError, IntegrityError, NotFoundError, UnsafeModelError
from keel.registry.package import FILE_NAME, MANIFEST
from keel.registry.signing import (
    SIGNATURE,
    find_signatures,
    sign_package,
    store_signature,
)
from keel.registry.verify import VerifyReport, project_keys, verify_parts

if TYPE_CHECKING:
    from keel.project import Project
    from keel.registry.records import VersionInfo

__all__ = [
    "LINEAGE",
    "MAX_BYTES",
    "MAX_MEMBERS",
    "PackageContents",
    "export_package",
    "import_package",
    "imported_lineage",
    "read_archive",
]

LINEAGE = "lineage.json"
LINEAGE_KIND = "model-lineage"
MAX_MEMBERS = 1_000
MAX_BYTES = 8 << 30  # 8 GiB in all
_FILE = re.compile(rf"^files/({FILE_NAME.pattern})$")
_WALK_LIMIT = 500


@dataclass(frozen=True)
class PackageContents:
    """A package read from an archive or directory, not yet trusted."""

    source: str
    manifest: bytes
    files: Mapping[str, bytes]
    signatures: tuple[bytes, ...] = ()
    lineage: dict[str, Any] = field(default_factory=dict)

    def verify(self, project: Project) -> VerifyReport:
        """Hashes, signature and types against ``project``'s trusted keys (loads nothing); a
        file the manifest does not list is a failure too."""
        report = verify_parts(
            self.manifest,
            lambda name, _sha: self.files.get(name),
            self.signatures,
            project_keys(project),
            require_signature=project.config.registry.require_signature,
        )
        listed = {f.name for f in report.files}
        extra = sorted(set(self.files) - listed) if listed else []
        if not extra:
            return report
        problem = f"files not listed in the manifest: {extra} (refused, not stored)"
        return replace(report, problems=(*report.problems, problem))


def export_package(ref: str, file: str | Path, *, project: str | Path | None = None) -> Path:
    """Write ``NAME@VERSION`` (or an alias) as one tar archive: manifest, signature, lineage
    summary and files. The package is verified first; a corrupt one is not exported.

    Raises:
        IntegrityError: A stored file does not match the manifest.
        ConfigError: ``file`` exists (archives are not overwritten).
    """
    from keel.project import Project

    out = Path(file)
    if out.exists():
        raise ConfigError(f"{out} exists; choose another file name.", field="file")
    with Project(project) as proj:
        version = proj.metadata.resolve(ref)
        sha = version.package_sha256
        manifest = proj.artifacts.get(sha)
        listed = orjson.loads(manifest)["files"]
        members = [(MANIFEST, manifest)]
        signatures = find_signatures(proj, sha)
        if signatures:
            members.append((SIGNATURE, signatures[0]))
        summary = _lineage_summary(proj, version.name, version.version)
        members.append((LINEAGE, orjson.dumps(summary, option=orjson.OPT_INDENT_2)))
        for name, spec in sorted(listed.items()):
            members.append((f"files/{name}", proj.artifacts.get(spec["sha256"])))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out


def read_archive(path: Path) -> PackageContents:
    """Read an export archive (or a package directory) without trusting it.

    Raises:
        UnsafeModelError: A member is a link or device, has an unsafe or unknown name, or
            the archive is larger than the bounds.
        NotFoundError: No such file.
        ConfigError: Not a tar archive, or no manifest in it.
    """
    if not path.exists():
        raise NotFoundError(f"no package archive at {path}.", field="file")
    members = _read_dir(path) if path.is_dir() else _read_tar(path)
    if MANIFEST not in members:
        raise ConfigError(f"{path} has no {MANIFEST}: not a Keel package.", field="file")
    files = {m[len("files/") :]: data for m, data in members.items() if m.startswith("files/")}
    lineage = orjson.loads(members[LINEAGE]) if LINEAGE in members else {}
    sig = (members[SIGNATURE],) if SIGNATURE in members else ()
    return PackageContents(str(path), members[MANIFEST], files, sig, lineage)


def import_package(
    file: str | Path, *, name: str | None = None, project: str | Path | None = None
) -> VersionInfo:
    """Verify an export archive and register it as a new version here, with its lineage
    summary; signs it with ``KEEL_SIGNING_KEY`` too when ``registry.sign`` is on.

    Args:
        name: Register under this model name (default: the manifest's).

    Raises:
        UnsafeModelError: Unsafe archive member, disallowed types, or a signature problem.
        IntegrityError: A file does not match the manifest (names it).
    """
    from keel.project import Project
    from keel.registry.registry import Registry

    contents = read_archive(Path(file))
    with Project(project) as proj:
        contents.verify(proj).raise_for_failure()
        manifest = orjson.loads(contents.manifest)
        for file_name, data in sorted(contents.files.items()):
            proj.artifacts.put(data, kind="model-file", metadata={"file": file_name})
        package = proj.artifacts.put(
            contents.manifest, kind="model-package", metadata={"file": MANIFEST}
        )
        proj.metadata.record_artifact(package)
        for signature in contents.signatures:
            store_signature(proj, package.sha256, signature)
        summary = {**contents.lineage, "imported_at": datetime.now(UTC).isoformat()}
        record = proj.artifacts.put(
            orjson.dumps(summary, option=orjson.OPT_SORT_KEYS),
            kind=LINEAGE_KIND,
            metadata={"package": package.sha256, "file": LINEAGE, "source": contents.source},
        )
        proj.metadata.record_artifact(record)
        if proj.config.registry.sign:
            sign_package(proj, package.sha256)
        metrics = summary.get("metrics") or manifest.get("metrics") or {}
        registry = Registry(proj.metadata.database, proj.config.registry)
        return registry.register(
            name or str(manifest["name"]),
            package_sha256=package.sha256,
            run_id=None,
            metrics={k: v for k, v in metrics.items() if k != "slices"},
        )


def imported_lineage(project: Project, package_sha256: str) -> dict[str, Any] | None:
    """The lineage summary an imported package came with (None: not imported)."""
    import sqlalchemy as sa

    from keel.store.tables import artifacts

    query = sa.select(artifacts.c.sha256).where(
        artifacts.c.kind == LINEAGE_KIND,
        artifacts.c.metadata["package"].as_string() == package_sha256,
    )
    with project.metadata.database.read() as conn:
        found = conn.execute(query).first()
    if found is None:
        return None
    summary: dict[str, Any] = orjson.loads(project.artifacts.get(str(found[0])))
    return summary


def _read_tar(path: Path) -> dict[str, bytes]:
    try:
        archive = tarfile.open(path, "r:")  # noqa: SIM115 - closed by `with archive:` below
    except tarfile.TarError as exc:
        msg = f"{path} is not a Keel export archive (an uncompressed tar): {exc}."
        raise ConfigError(msg, field="file") from exc
    members: dict[str, bytes] = {}
    total = 0
    with archive:
        for count, info in enumerate(archive, start=1):
            if count > MAX_MEMBERS:
                raise UnsafeModelError(f"{path}: more than {MAX_MEMBERS} members; refused.")
            _check_member(path, info.name, is_file=info.isreg())
            total += info.size
            if total > MAX_BYTES:
                raise UnsafeModelError(f"{path}: members exceed {MAX_BYTES >> 30} GiB; refused.")
            if info.name in members:
                raise UnsafeModelError(f"{path}: member {info.name!r} appears twice; refused.")
            stream = archive.extractfile(info)
            assert stream is not None  # a regular file
            members[info.name] = stream.read(info.size + 1)
            if len(members[info.name]) != info.size:
                raise IntegrityError(f"{path}: member {info.name!r} is truncated or padded.")
    return members


def _read_dir(path: Path) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    total = 0
    for entry in sorted(path.iterdir()):
        name = entry.name if entry.name in (MANIFEST, SIGNATURE, LINEAGE) else f"files/{entry.name}"
        _check_member(path, name, is_file=entry.is_file() and not entry.is_symlink())
        total += entry.stat().st_size
        if total > MAX_BYTES or len(members) >= MAX_MEMBERS:
            raise UnsafeModelError(f"{path}: larger than the import bounds; refused.")
        members[name] = entry.read_bytes()
    return members


def _check_member(path: Path, name: str, *, is_file: bool) -> None:
    if not is_file:
        raise UnsafeModelError(
            f"{path}: member {name!r} is not a regular file (a link, directory or device); "
            "refused: an export archive holds only regular files.",
            field="file",
        )
    if name in (MANIFEST, SIGNATURE, LINEAGE) or _FILE.match(name):
        return
    raise UnsafeModelError(
        f"{path}: member {name!r} is not a package file name (absolute paths, '..' and other "
        f"directories are refused; expected {MANIFEST}, {SIGNATURE}, {LINEAGE} or files/NAME).",
        field="file",
    )


def _lineage_summary(project: Project, name: str, version: int) -> dict[str, Any]:
    """Where a version came from: the run, the data snapshots upstream of it, the metrics."""
    found = project.metadata.get_model_version(name, version)
    summary: dict[str, Any] = {
        "source": {
            "model": name,
            "version": version,
            "package_sha256": found.package_sha256,
            "registered_at": found.created_at.isoformat(),
            "aliases": list(found.aliases),
        },
        "metrics": found.metrics,
        "run": None,
        "snapshots": [],
        "exported_at": datetime.now(UTC).isoformat(),
    }
    if found.run_id is None:
        return summary
    run = project.metadata.get_run(found.run_id)
    summary["run"] = {
        "id": run.id,
        "step": run.step,
        "started_at": run.started_at.isoformat(),
        "code_version": run.code_version,
        "config_hash": run.config_hash,
        "inputs": dict(run.inputs),
    }
    summary["snapshots"] = _upstream_snapshots(project, dict(run.inputs))
    return summary


def _upstream_snapshots(project: Project, inputs: dict[str, str]) -> list[dict[str, Any]]:
    """The data snapshots upstream of a run's inputs (a bounded walk over the lineage)."""
    seen: set[str] = set()
    snapshots = []
    todo = list(inputs.values())
    while todo and len(seen) < _WALK_LIMIT:
        sha = todo.pop()
        if sha in seen:
            continue
        seen.add(sha)
        try:
            artifact = project.metadata.get_artifact(sha)
        except NotFoundError:
            continue
        if artifact.kind == "snapshot":
            meta = artifact.metadata
            snapshots.append(
                {"sha256": sha, "source": meta.get("source"), "rows": meta.get("rows")}
            )
            continue
        for edge in project.metadata.lineage(sha):
            if edge.direction == "output":
                todo.extend(project.metadata.get_run(edge.run_id).inputs.values())
    return sorted(snapshots, key=lambda s: str(s["sha256"]))
