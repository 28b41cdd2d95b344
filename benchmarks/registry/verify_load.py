"""What verifying a model package costs when it is loaded (issue 15: <= 5 ms + hashing at
>= 1 GB/s).

Two signed packages in a fresh project with ``registry.require_signature`` on: the trained
Adult model (sklearn flavor, ~40 KB) and a ~100 MB one (the Adult package's files plus a
100 MB file). For each, the verification a load does before it builds the model:

* signature: fetch the manifest, find the package's signatures in the metadata store, read
  the trusted keys, check Ed25519 (:func:`keel.registry.verify.check_required_signature`);
* hashing: sha256 of every file the manifest lists, over the bytes the load reads anyway
  (reading them is the load's own cost, reported beside it, as is ``ArtifactStore.get``,
  read + re-hash, which is what ``ModelPackage.load`` calls per file).

Verify = signature + hashing; budget = 5 ms + bytes / (1 GB/s); medians of ``--rounds``
(files in the page cache). Run::

    .venv/bin/python benchmarks/registry/verify_load.py [--rounds 20] [--mb 100]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import orjson

import keel
from keel.project import Project
from keel.registry.package import STATISTICS_FILE, build_package
from keel.registry.signing import generate_keys, sign_package
from keel.registry.verify import check_required_signature

MODEL = """model:
  name: adult
  flavor: sklearn
  task: binary
  params:
    estimator: sklearn.linear_model.LogisticRegression
    max_iter: 200

evaluate:"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = _project(Path(tmp))
        with Project(root) as project:
            small = project.metadata.resolve("adult@1").package_sha256
            big = _big_package(project, small, args.mb << 20)
            print(
                "| package | bytes | signature ms | hashing ms | hash GB/s (best) "
                "| verify ms / budget "
                "| read ms (load's own) | store.get ms (read + hash) |"
            )
            print("|---|---|---|---|---|---|---|---|")
            for label, sha in (("Adult (sklearn)", small), (f"~{args.mb} MB", big)):
                _report(project, label, sha, args.rounds)


def _project(base: Path) -> Path:
    keys = generate_keys(base / "keys")
    root = Path(keel.init(base / "adult", example="adult"))
    text = re.sub(r"model:\n(?:.*\n)*?\nevaluate:", MODEL, (root / "keel.yaml").read_text())
    text = text.replace("    - roc_auc >= 0.9\n", "    - roc_auc >= 0.5\n")
    extra = f"  sign: true\n  require_signature: true\n  trusted_keys: [{keys.public_key}]\n"
    section = "registry:\n  alias: production\n"
    text = text.replace(section, section + extra)
    (root / "keel.yaml").write_text(text)
    os.environ["KEEL_SIGNING_KEY"] = str(keys.private_key)
    keel.run(root)
    return root


def _big_package(project: Project, sha: str, size: int) -> str:
    manifest = orjson.loads(project.artifacts.get(sha))
    files = {n: project.artifacts.get(s["sha256"]) for n, s in manifest["files"].items()}
    statistics_ = orjson.loads(files.pop(STATISTICS_FILE))
    files["weights.bin"] = os.urandom(size)
    package = build_package(
        project.artifacts,
        name="big",
        flavor=manifest["flavor"],
        task=manifest["task"],
        model_files=files,
        model_file=manifest["model_file"],
        pipeline_state=manifest["features"],
        classes=manifest["classes"],
        metrics=manifest["metrics"],
        statistics=statistics_,
        lineage=manifest["lineage"],
    )
    project.metadata.record_artifact(package)
    sign_package(project, package.sha256)
    return package.sha256


def _report(project: Project, label: str, sha: str, rounds: int) -> None:
    listed = orjson.loads(project.artifacts.get(sha))["files"]
    paths = [Path(project.artifacts.uri(spec["sha256"])) for spec in listed.values()]
    total = sum(int(spec["size"]) for spec in listed.values())
    signature, reading, hashing, loading = [], [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        assert check_required_signature(project, sha) is not None
        signature.append(time.perf_counter() - start)
        start = time.perf_counter()
        blobs = [path.read_bytes() for path in paths]  # the read a load does anyway
        reading.append(time.perf_counter() - start)
        start = time.perf_counter()
        for blob in blobs:
            hashlib.sha256(blob).hexdigest()  # what verifying adds to it
        hashing.append(time.perf_counter() - start)
        start = time.perf_counter()
        for spec in listed.values():
            project.artifacts.get(spec["sha256"])  # read + re-hash, as ModelPackage.load does
        loading.append(time.perf_counter() - start)
    sig_ms, hash_s = statistics.median(signature) * 1e3, statistics.median(hashing)
    rate = total / (hash_s or 1e-9) / 1e9
    best = total / (min(hashing) or 1e-9) / 1e9
    budget = 5.0 + total / 1e6  # 5 ms + hashing at 1 GB/s (1e6 bytes per ms)
    verify = sig_ms + hash_s * 1e3
    verdict = "PASS" if verify <= budget else "FAIL"
    print(
        f"| {label} | {total:,} | {sig_ms:.2f} | {hash_s * 1e3:.1f} | {rate:.2f} ({best:.2f}) "
        f"| {verify:.1f} / {budget:.1f} {verdict} | {statistics.median(reading) * 1e3:.1f} "
        f"| {statistics.median(loading) * 1e3:.1f} |"
    )


if __name__ == "__main__":
    main()
