"""Verify a model package without loading it: file hashes, signature, and the types its model
file would construct; and the one way Keel loads a registered package (:func:`load_package`).

Nothing here unpickles, imports or constructs anything named in a package: a scikit-learn file
is read as a zip of JSON (its ``schema.json``) and compared with the allowlist; LightGBM text,
XGBoost UBJSON and safetensors + JSON are parsed by their own readers only when loading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keel.errors import IntegrityError, NotFoundError, UnsafeModelError
from keel.registry.package import FILE_NAME, FORMAT, MANIFEST
from keel.registry.signing import SignatureCheck, check_signature, find_signatures, trusted_keys

if TYPE_CHECKING:
    from keel.project import Project
    from keel.registry.package import ModelPackage

__all__ = [
    "FileCheck",
    "TypesCheck",
    "VerifyReport",
    "check_required_signature",
    "describe",
    "load_package",
    "project_keys",
    "verify_package",
    "verify_parts",
]

#: Flavors whose model file is parsed by its own library's reader (no type construction).
_PARSED_BY = {
    "lightgbm": "LightGBM text model, parsed by LightGBM",
    "xgboost": "XGBoost UBJSON model, parsed by XGBoost",
    "mlp": "safetensors tensors + JSON architecture (fixed layer kinds)",
}


@dataclass(frozen=True)
class FileCheck:
    """One file the manifest lists: its expected hash and size, and whether they match."""

    name: str
    sha256: str
    size: int
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class TypesCheck:
    """What a model file would construct (scikit-learn: every type in its ``schema.json``)
    and which of those are outside the allowlist; other flavors say which reader parses it."""

    file: str
    format: str
    types: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.refused


@dataclass(frozen=True)
class VerifyReport:
    """Hashes, signature and types of one package; :attr:`failures` says what is wrong."""

    package_sha256: str
    name: str
    flavor: str
    files: tuple[FileCheck, ...]
    signature: SignatureCheck
    signature_required: bool
    types: TypesCheck | None
    problems: tuple[str, ...] = field(default=())

    @property
    def failures(self) -> list[str]:
        """One sentence per failure; empty when the package passes."""
        out = list(self.problems)
        out += [f"file {f.name}: {f.reason}" for f in self.files if not f.ok]
        if self.signature.status == "bad-signature":  # tampering, required or not
            out.append(f"signature: {self.signature.reason}")
        elif self.signature_required and not self.signature.ok:
            out.append(f"signature required: {self.signature.reason}")
        if self.types is not None and not self.types.ok:
            out.append(
                f"{self.types.file} would construct types not allowed: {list(self.types.refused)}"
            )
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``keel models verify --json``)."""
        return {
            "package_sha256": self.package_sha256,
            "name": self.name,
            "flavor": self.flavor,
            "ok": self.ok,
            "failures": self.failures,
            "files": [vars(f) for f in self.files],
            "signature": {**vars(self.signature), "required": self.signature_required},
            "types": None
            if self.types is None
            else {
                **vars(self.types),
                "types": list(self.types.types),
                "refused": list(self.types.refused),
            },
        }

    def raise_for_failure(self) -> None:
        """Raise the error a load would: UnsafeModelError for types or signature, else
        IntegrityError for hashes."""
        failures = self.failures
        if not failures:
            return
        unsafe = (
            (self.types is not None and not self.types.ok)
            or (self.signature_required and not self.signature.ok)
            or self.signature.status == "bad-signature"
        )
        error = UnsafeModelError if unsafe else IntegrityError
        raise error(
            f"model package {self.name} ({self.package_sha256[:12]}) refused: "
            + "; ".join(failures),
            details={"failures": failures},
        )


def verify_parts(
    manifest: bytes,
    read: Callable[[str, str], bytes | None],
    signatures: Sequence[bytes],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    require_signature: bool,
) -> VerifyReport:
    """Verify a package from its parts: the manifest bytes, a reader of each listed file
    (``read(name, sha256)``, None when absent) and its signature files. Loads nothing."""
    sha = hashlib.sha256(manifest).hexdigest()
    try:
        spec = orjson.loads(manifest)
        listed = {str(k): (str(v["sha256"]), int(v["size"])) for k, v in spec["files"].items()}
        if spec.get("format") != FORMAT:
            raise ValueError(f"format {spec.get('format')!r}, expected {FORMAT!r}")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        problem = f"{MANIFEST} is not a Keel package manifest ({exc})"
        return VerifyReport(
            sha,
            "?",
            "?",
            (),
            check_signature(manifest, signatures, keys),
            require_signature,
            None,
            (problem,),
        )
    files, contents = [], {}
    for name, (expected, size) in sorted(listed.items()):
        if not FILE_NAME.fullmatch(name):
            files.append(FileCheck(name, expected, size, False, "not a plain file name"))
            continue
        data = read(name, expected)
        if data is None:
            files.append(FileCheck(name, expected, size, False, "missing from the package"))
            continue
        actual = hashlib.sha256(data).hexdigest()
        reason = (
            ""
            if actual == expected
            else (f"sha256 is {actual}, the manifest says {expected}: the file was changed")
        )
        files.append(FileCheck(name, expected, size, not reason, reason))
        contents[name] = data
    flavor = str(spec.get("flavor", "lightgbm"))
    model_file = str(spec.get("model_file", "model.lgb.txt"))
    return VerifyReport(
        sha,
        str(spec.get("name", "?")),
        flavor,
        tuple(files),
        check_signature(manifest, signatures, keys),
        require_signature,
        _types(flavor, model_file, contents.get(model_file)),
    )


def _types(flavor: str, model_file: str, data: bytes | None) -> TypesCheck | None:
    if data is None:
        return None
    if flavor == "sklearn":
        from keel.train.sklearn import refused_types, skops_types

        try:
            found = tuple(sorted({name for _, name in skops_types(data)}))
            refused = tuple(refused_types(data))
        except UnsafeModelError as exc:
            return TypesCheck(model_file, "skops", (), (exc.message,))
        return TypesCheck(model_file, "skops (schema.json read as JSON)", found, refused)
    if flavor in _PARSED_BY:
        return TypesCheck(model_file, _PARSED_BY[flavor])
    return TypesCheck(model_file, f"plug-in flavor {flavor!r}: loaded by its installed Trainer")


def project_keys(project: Project) -> dict[str, Ed25519PublicKey]:
    """The project's trusted public keys (``registry.trusted_keys``), by key id."""
    return trusted_keys(project.config.registry.trusted_keys, project.root)


def verify_package(ref: str, *, project: str | Path | None = None) -> VerifyReport:
    """Verify a registered version (``NAME@VERSION``, an alias, ``NAME``) or a package file
    (an export archive or a package directory) without loading anything.

    The signature counts as a failure only when ``registry.require_signature`` is on; the
    report says who signed either way.
    """
    from keel.project import Project

    with Project(project) as proj:
        if _is_file(ref):
            from keel.registry.exchange import read_archive

            contents = read_archive(Path(ref))
            return contents.verify(proj)
        version = proj.metadata.resolve(ref)
        return verify_stored(proj, version.package_sha256)


def verify_stored(project: Project, sha256: str) -> VerifyReport:
    """Verify a package in the project's artifact store (hashes re-read, nothing loaded)."""
    store = project.artifacts

    def read(_name: str, sha: str) -> bytes | None:
        try:
            return store.get(sha)
        except NotFoundError:
            return None
        except IntegrityError as exc:  # read it anyway: the report names the file
            uri = exc.details.get("uri")
            return Path(uri).read_bytes() if uri and Path(uri).is_file() else b""

    manifest = store.get(sha256)
    cfg = project.config.registry
    return verify_parts(
        manifest,
        read,
        find_signatures(project, sha256),
        project_keys(project),
        require_signature=cfg.require_signature,
    )


def load_package(project: Project, sha256: str) -> ModelPackage:
    """Load a registered package the safe way: the signature against the trusted keys when
    ``registry.require_signature`` is on, then every file's hash (naming a changed file), then
    the model through its flavor (scikit-learn types checked against the allowlist first).

    Raises:
        UnsafeModelError: Unsigned, signed by an unknown key, bad signature, or a type not
            allowed.
        IntegrityError: A file's bytes do not match the manifest (names the file).
    """
    from keel.features.custom import importable_from
    from keel.registry.package import ModelPackage

    check_required_signature(project, sha256)
    with importable_from(project.root):
        return ModelPackage.load(project.artifacts, sha256)


def check_required_signature(project: Project, sha256: str) -> SignatureCheck | None:
    """When ``registry.require_signature`` is on, check the package's signatures against the
    trusted keys (the manifest's bytes only; file hashes are checked as files are read).

    Returns:
        The passing check, or None when signatures are not required.

    Raises:
        UnsafeModelError: Unsigned, signed by an untrusted key, or a bad signature (says which).
    """
    if not project.config.registry.require_signature:
        return None
    check = check_signature(
        project.artifacts.get(sha256), find_signatures(project, sha256), project_keys(project)
    )
    if not check.ok:
        raise UnsafeModelError(
            f"model package {sha256[:12]} refused: registry.require_signature is on and "
            f"{check.reason}.",
            details={"status": check.status, "key_id": check.key_id},
        )
    return check


def _is_file(ref: str) -> bool:
    path = Path(ref)
    return ("/" in ref or path.suffix in {".tar", ".zip", ".keel"}) and path.exists()


def describe(report: VerifyReport) -> list[str]:
    """The report as lines for a person (``keel models verify``)."""
    lines = [f"package {report.name} ({report.package_sha256[:12]}), flavor {report.flavor}"]
    for f in report.files:
        lines.append(
            f"  {'ok ' if f.ok else 'BAD'} {f.name}  {f.sha256[:12]}  {f.size} bytes"
            + (f"  {f.reason}" if f.reason else "")
        )
    need = "required" if report.signature_required else "not required"
    lines.append(f"  signature ({need}): {report.signature.status}: {report.signature.reason}")
    if report.types is not None:
        t = report.types
        lines.append(
            f"  types in {t.file} ({t.format}): {len(t.types)} found, "
            f"{len(t.refused)} not allowed" + (f": {list(t.refused)}" if t.refused else "")
        )
    lines.append("OK" if report.ok else "FAILED: " + "; ".join(report.failures))
    return lines
