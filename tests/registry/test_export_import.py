"""Export a package as one archive and import it into another project's registry, verified."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

import keel
from keel.cli import app
from keel.errors import IntegrityError, UnsafeModelError
from keel.project import Project
from keel.registry.exchange import imported_lineage
from tests.registry.packages import make_project, repackage, set_registry

ADULT_TEST = Path(__file__).resolve().parents[2] / "examples" / "adult" / "data" / "adult.test"


@pytest.fixture
def prod(signed_project: Path, tmp_path: Path) -> Path:
    """A second, untrained project that requires signatures by the dev project's key."""
    root = make_project(tmp_path / "prod", run=False)
    key = signed_project.parent / "keys" / "keel-signing.pub.pem"
    set_registry(root, f"  require_signature: true\n  trusted_keys: [{key}]\n")
    return root


def _rows() -> object:
    columns = [
        "age",
        "workclass",
        "fnlwgt",
        "education",
        "education-num",
        "marital-status",
        "occupation",
        "relationship",
        "race",
        "sex",
        "capital-gain",
        "capital-loss",
        "hours-per-week",
        "native-country",
        "income",
    ]
    table = pacsv.read_csv(
        ADULT_TEST,
        read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1),
        convert_options=pacsv.ConvertOptions(null_values=["?"], strings_can_be_null=True),
    )
    return table.slice(0, 300).drop_columns(["income"]).to_pandas()


def test_export_then_import_round_trips_with_identical_predictions(
    signed_project: Path, prod: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "adult-1.tar"
    result = CliRunner().invoke(
        app, ["models", "export", "adult@1", str(archive), "-p", str(signed_project)]
    )
    assert result.exit_code == 0, result.output
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[:3] == ["keel-model.json", "keel-model.sig", "lineage.json"]
    verified = CliRunner().invoke(app, ["models", "verify", str(archive), "-p", str(prod)])
    assert verified.exit_code == 0, verified.output

    result = CliRunner().invoke(
        app, ["models", "import", str(archive), "--name", "adult-prod", "-p", str(prod)]
    )
    assert result.exit_code == 0, result.output
    rows = _rows()
    dev = keel.load_model("adult@1", project=signed_project)
    imported = keel.load_model("adult-prod@1", project=prod)
    assert imported.package.sha256 == dev.package.sha256
    assert np.array_equal(dev.predict_proba(rows), imported.predict_proba(rows))
    with Project(prod) as project:
        lineage = imported_lineage(project, imported.package.sha256)
    assert lineage is not None
    assert lineage["source"] == lineage["source"] | {"model": "adult", "version": 1}
    assert {s["source"] for s in lineage["snapshots"]} == {"data/adult.data", "data/adult.test"}
    assert lineage["metrics"]["roc_auc"] > 0.8 and lineage["run"]["step"] == "register"
    assert keel.verify_package("adult-prod@1", project=prod).signature.status == "valid"


def test_import_refuses_unsigned_untrusted_and_changed_packages(
    signed_project: Path, prod: Path, tmp_path: Path
) -> None:
    dev = Path(shutil.copytree(signed_project, tmp_path / "dev"))
    repackage(dev, "adult@1")  # adult@2, unsigned
    unsigned = keel.export_package("adult@2", tmp_path / "unsigned.tar", project=dev)
    with pytest.raises(UnsafeModelError, match="unsigned"):
        keel.import_package(unsigned, project=prod)

    signed = keel.export_package("adult@1", tmp_path / "signed.tar", project=dev)
    set_registry(prod, "  require_signature: true\n")  # trusts no key
    with pytest.raises(UnsafeModelError, match="not trusted"):
        keel.import_package(signed, project=prod)

    set_registry(prod, "")  # signatures not required: hashes still are
    changed = _rewrite(signed, tmp_path / "changed.tar", flip="files/model.skops")
    with pytest.raises(IntegrityError, match=r"model\.skops"):
        keel.import_package(changed, project=prod)
    extra = _rewrite(signed, tmp_path / "extra.tar", add="files/extra.py")
    with pytest.raises(IntegrityError, match="not listed in the manifest"):
        keel.import_package(extra, project=prod)
    with Project(prod) as project:
        assert project.metadata.list_models() == [], "nothing was registered"


@pytest.mark.parametrize(
    "member",
    ["../evil.txt", "/tmp/evil.txt", "files/../../evil.txt", "files/sub/evil.txt", "link"],
)
def test_archive_members_that_escape_or_link_are_refused(
    signed_project: Path, prod: Path, tmp_path: Path, member: str
) -> None:
    archive = keel.export_package("adult@1", tmp_path / "a.tar", project=signed_project)
    bad = _rewrite(archive, tmp_path / "bad.tar", add=member)
    with pytest.raises(UnsafeModelError, match="refused"):
        keel.import_package(bad, project=prod)
    assert not (tmp_path / "evil.txt").exists()
    verified = CliRunner().invoke(app, ["models", "verify", str(bad), "-p", str(prod)])
    assert isinstance(verified.exception, UnsafeModelError)


def _rewrite(source: Path, target: Path, *, flip: str = "", add: str = "") -> Path:
    """Copy an archive, flipping one byte of member ``flip`` or adding a hostile member."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for info in old:
            data = old.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == flip:
                data = data[:10] + bytes([data[10] ^ 1]) + data[11:]
            new.addfile(info, io.BytesIO(data))
        if add == "link":
            link = tarfile.TarInfo("files/evil.txt")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            new.addfile(link)
        elif add:
            payload = json.dumps({"evil": True}).encode()
            info = tarfile.TarInfo(add)
            info.size = len(payload)
            new.addfile(info, io.BytesIO(payload))
    return target
