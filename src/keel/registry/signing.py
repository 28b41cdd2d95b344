"""Ed25519 signatures over model package manifests: keys, signing and checking.

A package is pinned by its manifest (``keel-model.json``), which lists every file's sha256, so
signing the manifest's bytes (exactly as stored: sorted keys, the bytes that hash to the
package's sha256) signs the whole package. The signature file ``keel-model.sig`` is JSON::

    {"format": "keel-signature/1", "algorithm": "ed25519", "key_id": "3f2a…",
     "manifest_sha256": "…", "signature": "<base64>"}

The key id is the first 16 hex digits of the sha256 of the raw 32-byte public key. Private keys
live in a PEM file or the ``KEEL_SIGNING_KEY`` variable (PEM text or a path), never in keel.yaml
or the metadata store; signatures are stored as artifacts (kind ``model-signature``) beside the
package they sign, recorded with the package's sha256 so a load finds them.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keel.errors import ConfigError, NotFoundError
from keel.settings import load_settings
from keel.store.tables import artifacts

if TYPE_CHECKING:
    from keel.project import Project
    from keel.types import Artifact

__all__ = [
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "SIGNATURE",
    "SIGNATURE_KIND",
    "KeyPair",
    "SignatureCheck",
    "check_signature",
    "find_signatures",
    "generate_keys",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign_manifest",
    "sign_package",
    "sign_version",
    "signing_key",
    "store_signature",
    "trusted_keys",
]

SIGNATURE = "keel-model.sig"
SIGNATURE_FORMAT = "keel-signature/1"
SIGNATURE_KIND = "model-signature"
PRIVATE_KEY_FILE = "keel-signing.pem"
PUBLIC_KEY_FILE = "keel-signing.pub.pem"
_PEM = b"-----BEGIN"


@dataclass(frozen=True)
class KeyPair:
    """Where :func:`generate_keys` wrote a key pair, and the public key's id."""

    private_key: Path
    public_key: Path
    key_id: str


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of checking a package's signatures against the trusted keys.

    Attributes:
        status: ``valid``, ``unsigned``, ``unknown-key`` (signed, but by no trusted key),
            ``bad-signature`` (a trusted key's signature does not match the manifest) or
            ``malformed`` (a signature file that is not one).
        key_id: The key of the valid signature, or of the first one found.
        reason: One sentence for a person, naming the key and what to do.
    """

    status: str
    key_id: str | None
    reason: str

    @property
    def ok(self) -> bool:
        """Whether a trusted key's signature matches."""
        return self.status == "valid"


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keys(directory: str | Path, *, overwrite: bool = False) -> KeyPair:
    """Write a new Ed25519 key pair: ``keel-signing.pem`` (private, mode 0600) and
    ``keel-signing.pub.pem`` (public; list it in ``registry.trusted_keys``).

    Raises:
        ConfigError: A key file exists there and ``overwrite`` is False.
    """
    out = Path(directory).expanduser()
    private, public = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    if not overwrite and (private.exists() or public.exists()):
        raise ConfigError(
            f"{private if private.exists() else public} exists; keys are not overwritten. Pick "
            "another --out directory, or remove the old pair (packages it signed then need "
            "its public key to verify).",
            field="out",
        )
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private, flags, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(pem)
    os.chmod(private, 0o600)  # an existing file keeps its mode through O_TRUNC
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(private, public, key_id(key.public_key()))


def load_private_key(source: str, *, what: str = "KEEL_SIGNING_KEY") -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM text or the path of a PEM file.

    Raises:
        ConfigError: Not a file, not PEM, or not an Ed25519 key (names ``what``).
    """
    data = source.encode() if source.lstrip().startswith("-----BEGIN") else _read(source, what)
    try:
        key = serialization.load_pem_private_key(data.strip() + b"\n", password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{what}: not an unencrypted PEM private key ({exc}). Use a key from keel keys "
            "generate.",
            field=what,
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{what}: a {type(key).__name__}, not an Ed25519 key; use keel keys generate.",
            field=what,
        )
    return key


def load_public_key(path: str | Path, *, what: str = "registry.trusted_keys") -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file.

    Raises:
        ConfigError: The file is missing, not PEM, or not an Ed25519 public key.
    """
    data = _read(str(path), what)
    try:
        key = serialization.load_pem_public_key(data.strip() + b"\n")
    except ValueError as exc:
        raise ConfigError(f"{what}: {path} is not a PEM public key ({exc}).", field=what) from exc
    if not isinstance(key, Ed25519PublicKey):
        msg = f"{what}: {path} holds a {type(key).__name__}, not an Ed25519 public key."
        raise ConfigError(msg, field=what)
    return key


def signing_key() -> Ed25519PrivateKey:
    """The private key in ``KEEL_SIGNING_KEY`` (PEM text or a path), read now.

    Raises:
        ConfigError: The variable is unset or does not hold an Ed25519 private key.
    """
    source = load_settings().signing_key
    if source is None:
        raise ConfigError(
            "registry.sign is on but KEEL_SIGNING_KEY is not set: set it to the private key's "
            "PEM text or its path (keel keys generate writes one), or set registry.sign: false.",
            field="KEEL_SIGNING_KEY",
        )
    return load_private_key(source)


def trusted_keys(paths: Iterable[str | Path], root: Path) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key for each file (relative paths are under ``root``)."""
    keys = {}
    for path in paths:
        full = Path(path).expanduser()
        key = load_public_key(full if full.is_absolute() else root / full)
        keys[key_id(key)] = key
    return keys


def sign_manifest(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """The ``keel-model.sig`` bytes for a manifest (deterministic: Ed25519 is)."""
    body = {
        "format": SIGNATURE_FORMAT,
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "signature": base64.b64encode(key.sign(manifest)).decode(),
    }
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def check_signature(
    manifest: bytes, signatures: Sequence[bytes], keys: Mapping[str, Ed25519PublicKey]
) -> SignatureCheck:
    """Whether any signature is a trusted key's valid signature of ``manifest``.

    Never raises: the outcome names what is wrong (see :class:`SignatureCheck`).
    """
    if not signatures:
        reason = (
            "the package is unsigned (no keel-model.sig); sign it with keel models sign, or "
            "register it with registry.sign: true"
        )
        return SignatureCheck("unsigned", None, reason)
    first: SignatureCheck | None = None
    for data in signatures:
        outcome = _check_one(manifest, data, keys)
        if outcome.ok:
            return outcome
        first = first or outcome
    assert first is not None
    return first


def _check_one(
    manifest: bytes, data: bytes, keys: Mapping[str, Ed25519PublicKey]
) -> SignatureCheck:
    try:
        body = orjson.loads(data)
        kid, signature = str(body["key_id"]), base64.b64decode(body["signature"], validate=True)
        if body.get("format") != SIGNATURE_FORMAT or body.get("algorithm") != "ed25519":
            raise ValueError(f"format {body.get('format')!r}, algorithm {body.get('algorithm')!r}")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return SignatureCheck("malformed", None, f"{SIGNATURE} is not a Keel signature: {exc}")
    key = keys.get(kid)
    if key is None:
        known = ", ".join(sorted(keys)) or "none (registry.trusted_keys is empty)"
        reason = f"signed by key {kid}, which is not trusted (trusted: {known})"
        return SignatureCheck("unknown-key", kid, reason)
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        reason = (
            f"the signature by key {kid} does not match the manifest: the package or its "
            "signature was changed after signing"
        )
        return SignatureCheck("bad-signature", kid, reason)
    return SignatureCheck("valid", kid, f"signed by trusted key {kid}")


def store_signature(project: Project, package_sha256: str, signature: bytes) -> Artifact:
    """Store a ``keel-model.sig`` beside a package and record it, so loads find it."""
    body = orjson.loads(signature)
    artifact = project.artifacts.put(
        signature,
        kind=SIGNATURE_KIND,
        metadata={"package": package_sha256, "key_id": str(body.get("key_id")), "file": SIGNATURE},
    )
    project.metadata.record_artifact(artifact)
    return artifact


def sign_package(project: Project, package_sha256: str) -> Artifact:
    """Sign a stored package's manifest with ``KEEL_SIGNING_KEY`` and store the signature."""
    manifest = project.artifacts.get(package_sha256)
    return store_signature(project, package_sha256, sign_manifest(manifest, signing_key()))


def sign_version(ref: str, *, project: str | Path | None = None) -> str:
    """Sign a registered version's package with ``KEEL_SIGNING_KEY`` (one registered before
    ``registry.sign`` was on, or imported unsigned); returns the key id.

    Raises:
        ConfigError: ``KEEL_SIGNING_KEY`` is unset or not an Ed25519 private key.
        NotFoundError: ``ref`` does not resolve.
    """
    from keel.project import Project

    with Project(project) as proj:
        sha = proj.metadata.resolve(ref).package_sha256
        artifact = sign_package(proj, sha)
        return str(artifact.metadata["key_id"])


def find_signatures(project: Project, package_sha256: str) -> list[bytes]:
    """Every stored signature of a package (verified against its own sha256 on read)."""
    query = sa.select(artifacts.c.sha256).where(
        artifacts.c.kind == SIGNATURE_KIND,
        artifacts.c.metadata["package"].as_string() == package_sha256,
    )
    with project.metadata.database.read() as conn:
        hashes = sorted(str(row[0]) for row in conn.execute(query))
    return [project.artifacts.get(sha) for sha in hashes]


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(f"{what}: no key file at {path}.", field=what) from exc
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc}.", field=what) from exc
    if _PEM not in data:
        raise ConfigError(f"{what}: {path} is not a PEM file.", field=what)
    return data
