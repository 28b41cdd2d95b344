"""Ed25519-signed packages: signing at registration, and loads that refuse with the reason."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import keel
from keel.errors import ConfigError, IntegrityError, UnsafeModelError
from keel.project import Project
from keel.registry.signing import (
    check_signature,
    find_signatures,
    generate_keys,
    load_private_key,
    sign_manifest,
    signing_key,
    store_signature,
)
from tests.registry.packages import repackage, set_registry


@pytest.fixture
def project(signed_project: Path, tmp_path: Path) -> Path:
    """A copy of the signed project that requires signatures by its own key."""
    root = Path(shutil.copytree(signed_project, tmp_path / "adult"))
    key = signed_project.parent / "keys" / "keel-signing.pub.pem"
    set_registry(root, f"  require_signature: true\n  trusted_keys: [{key}]\n")
    return root


def test_registration_signs_the_manifest_and_loads_verify_it(project: Path) -> None:
    report = keel.verify_package("adult@1", project=project)
    assert report.ok, report.failures
    assert report.signature.status == "valid" and report.signature_required
    model = keel.load_model("adult@1", project=project)
    assert model.version == 1
    with Project(project) as proj:
        sha = proj.metadata.resolve("adult@1").package_sha256
        (signature,) = find_signatures(proj, sha)
        assert check_signature(proj.artifacts.get(sha), [signature], {}).status == "unknown-key"


def test_an_unsigned_package_is_refused_when_signatures_are_required(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repackage(project, "adult@1")  # adult@2: the same model, never signed
    with pytest.raises(UnsafeModelError, match="unsigned"):
        keel.load_model("adult@2", project=project)
    report = keel.verify_package("adult@2", project=project)
    assert report.signature.status == "unsigned" and not report.ok
    from keel.serve.models import load_served

    with Project(project) as proj, pytest.raises(UnsafeModelError, match="unsigned"):
        load_served(proj, "adult@2")  # the server (and its hot reload) loads the same way
    # signing it afterwards (keel models sign) makes it loadable
    monkeypatch.setenv("KEEL_SIGNING_KEY", str(_trusted_private_key(project)))
    from keel.cli import app

    result = CliRunner().invoke(app, ["models", "sign", "adult@2", "-p", str(project)])
    assert result.exit_code == 0, result.output
    assert keel.load_model("adult@2", project=project).version == 2


def test_a_wrong_key_and_a_bad_signature_are_refused(project: Path, tmp_path: Path) -> None:
    sha = repackage(project, "adult@1")  # adult@2
    stranger = generate_keys(tmp_path / "stranger")
    with Project(project) as proj:
        stranger_key = load_private_key(str(stranger.private_key))
        store_signature(proj, sha, sign_manifest(proj.artifacts.get(sha), stranger_key))
    with pytest.raises(UnsafeModelError, match=f"key {stranger.key_id}, which is not trusted"):
        keel.load_model("adult@2", project=project)

    # the trusted key's signature of another manifest, filed under this package
    sha3 = repackage(project, "adult@1", tag="third")  # adult@3
    key = load_private_key(str(_trusted_private_key(project)))
    with Project(project) as proj:
        store_signature(proj, sha3, sign_manifest(proj.artifacts.get(sha), key))
    with pytest.raises(UnsafeModelError, match="does not match the manifest"):
        keel.load_model("adult@3", project=project)
    assert keel.verify_package("adult@3", project=project).signature.status == "bad-signature"
    # not required, but a trusted key's signature that does not match is still a failure
    public = _trusted_private_key(project).with_name("keel-signing.pub.pem")
    set_registry(project, f"  trusted_keys: [{public}]\n")
    report = keel.verify_package("adult@3", project=project)
    assert not report.signature_required and not report.ok
    assert keel.load_model("adult@2", project=project).version == 2  # not checked when optional


def test_one_changed_byte_is_refused_naming_the_file(project: Path) -> None:
    with Project(project) as proj:
        sha = proj.metadata.resolve("adult@1").package_sha256
        spec = orjson.loads(proj.artifacts.get(sha))["files"]["model.skops"]
        blob = Path(proj.artifacts.uri(spec["sha256"]))
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.skops"):
        keel.load_model("adult@1", project=project)
    report = keel.verify_package("adult@1", project=project)
    assert [f.name for f in report.files if not f.ok] == ["model.skops"]
    from keel.cli import app

    result = CliRunner().invoke(app, ["models", "verify", "adult@1", "-p", str(project)])
    assert result.exit_code == 1 and "model.skops" in result.output


def test_keys_are_generated_private_and_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.cli import app

    result = CliRunner().invoke(app, ["keys", "generate", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    private = tmp_path / "k" / "keel-signing.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    again = CliRunner().invoke(app, ["keys", "generate", "--out", str(tmp_path / "k")])
    assert isinstance(again.exception, ConfigError) and "not overwritten" in str(again.exception)

    monkeypatch.delenv("KEEL_SIGNING_KEY", raising=False)
    with pytest.raises(ConfigError, match="KEEL_SIGNING_KEY is not set"):
        signing_key()
    monkeypatch.setenv("KEEL_SIGNING_KEY", private.read_text())  # the PEM text itself
    by_text = signing_key()
    monkeypatch.setenv("KEEL_SIGNING_KEY", str(private))  # or its path
    assert signing_key().public_key() == by_text.public_key()
    monkeypatch.setenv("KEEL_SIGNING_KEY", str(tmp_path / "k" / "keel-signing.pub.pem"))
    with pytest.raises(ConfigError, match="KEEL_SIGNING_KEY"):
        signing_key()


def _trusted_private_key(project: Path) -> Path:
    text = (project / "keel.yaml").read_text()
    public = Path(text.split("trusted_keys: [", 1)[1].split("]", 1)[0])
    return public.with_name("keel-signing.pem")
