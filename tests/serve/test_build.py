"""``keel build docker|k8s``: a Docker build context with the verified package baked in, and
Kubernetes manifests that validate against the Kubernetes schemas."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import kubernetes_validate
import orjson
import pytest
import yaml

import keel
from keel.errors import ConfigError, IntegrityError, NotFoundError
from keel.project import Project
from keel.registry.exchange import read_archive
from keel.serve.build import K8sOptions, build_docker, build_k8s, k8s_documents
from tests.serve.conftest import JSON, ROW, free_port

K8S_VERSION = "1.37.0"


def _keel(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def context(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docker") / "ctx"
    result = _keel("build", "docker", "adult@1", "--project", str(adult_project), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"to {out}" in result.stdout.replace("\n", "")
    return out


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile(context: Path) -> None:
    steps = _instructions((context / "Dockerfile").read_text())
    kinds = [kind for kind, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    user = [args for kind, args in steps if kind == "USER"]
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    # everything after USER runs as that user: the import, the health check, the server
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    health = next(args for kind, args in steps if kind == "HEALTHCHECK")
    assert "/v2/health/ready" in health and "--interval=" in health
    entry = json.loads(next(args for kind, args in steps if kind == "ENTRYPOINT"))
    assert entry[:2] == ["keel", "serve"]
    assert entry[entry.index("--host") + 1] == "0.0.0.0"
    assert entry[entry.index("--auth") + 1] == "required"
    assert json.loads(next(args for kind, args in steps if kind == "CMD")) == ["adult"]
    install = next(args for kind, args in steps if kind == "ARG")
    # this Keel, as a wheel built from its source tree (on PyPI 'keel' is another project)
    wheel = f"keel-{keel.__version__}-py3-none-any.whl"
    assert install == f'KEEL_REQUIREMENT="/tmp/wheels/{wheel}"'  # lightgbm: no extra
    assert ("COPY", "wheels/ /tmp/wheels/") in steps and (context / "wheels" / wheel).is_file()
    imported = next(args for kind, args in steps if kind == "RUN" and "models import" in args)
    assert "keel models verify adult" in imported
    ignored = (context / ".dockerignore").read_text().split()
    assert ignored[0] == "*" and set(ignored[1:]) == {
        "!keel.yaml",
        "!model.tar",
        f"!wheels/{wheel}",
    }
    assert "KEEL_SERVE_TOKEN" in (context / "README.md").read_text()


def test_the_baked_package_is_the_registered_one(adult_project: Path, context: Path) -> None:
    with Project(adult_project) as project:
        version = project.metadata.resolve("adult@1")
        contents = read_archive(context / "model.tar")
        assert hashlib.sha256(contents.manifest).hexdigest() == version.package_sha256
        listed = orjson.loads(contents.manifest)["files"]
        assert set(listed) == set(contents.files) and listed
        for name, spec in listed.items():
            assert hashlib.sha256(contents.files[name]).hexdigest() == spec["sha256"]
        contents.verify(project).raise_for_failure()

        # a tampered archive does not verify
        tampered = context.parent / "tampered.tar"
        with tarfile.open(context / "model.tar") as src, tarfile.open(tampered, "w") as dst:
            for member in src.getmembers():
                data = src.extractfile(member).read()  # type: ignore[union-attr]
                if member.name == "files/statistics.json":
                    data = data.replace(b"{", b"{ ", 1)
                    member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
        with pytest.raises(IntegrityError):
            read_archive(tampered).verify(project).raise_for_failure()


def test_the_image_steps_serve_with_a_token(context: Path, tmp_path: Path) -> None:
    """What the image does, here: import and verify the package into the serving project
    (the Dockerfile's RUN), then the ENTRYPOINT on 127.0.0.1 with KEEL_SERVE_TOKEN."""
    home = tmp_path / "srv"
    home.mkdir()
    for name in ("keel.yaml", "model.tar"):
        shutil.copy(context / name, home / name)
    steps = _instructions((context / "Dockerfile").read_text())
    run = next(args for kind, args in steps if kind == "RUN" and "models import" in args)
    for command in run.split("&&")[:2]:  # keel models import ..., keel models verify ...
        words = command.split()
        assert words[0] == "keel"
        words[words.index("--project") + 1] = str(home)
        result = _keel(*words[1:], cwd=home)  # WORKDIR
        assert result.returncode == 0, result.stdout + result.stderr
    entry = json.loads(next(args for kind, args in steps if kind == "ENTRYPOINT"))
    cmd = json.loads(next(args for kind, args in steps if kind == "CMD"))
    argv = [*entry[1:], *cmd]
    argv[argv.index("--project") + 1] = str(home)
    argv[argv.index("--host") + 1] = "127.0.0.1"  # tests listen on loopback only
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    without = _keel(*argv)  # no token anywhere: refused before serving
    assert without.returncode == 2 and "requires a token" in without.stderr
    secret = "s" * 43
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KEEL_SERVE_TOKEN": secret},
            cwd=home,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = 600  # x 0.1 s
        for _ in range(deadline):
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail(log.read_text())
        body = {"instances": [ROW]}
        assert httpx.post(f"{url}/v1/models/adult/predict", json=body).status_code == 401
        answer = httpx.post(
            f"{url}/v1/models/adult/predict",
            json=body,
            headers={**JSON, "authorization": f"Bearer {secret}"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_docker_bad_input(adult_project: Path, tmp_path: Path) -> None:
    for ref, code, words in [
        ("adult", 2, "is not NAME@VERSION"),
        ("adult@99", 1, "has no version 99"),
        ("nosuch@1", 1, "nosuch"),
    ]:
        result = _keel(
            "build", "docker", ref, "--project", str(adult_project), "-o", str(tmp_path / "x")
        )
        assert result.returncode == code, result.stderr
        assert words in result.stderr and "Traceback" not in result.stderr
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("mine")
    with Project(adult_project) as project:
        with pytest.raises(ConfigError, match="not empty"):
            build_docker(project, "adult@1", taken)
        assert (taken / "file").read_text() == "mine"
        with pytest.raises(ConfigError, match="wheel"):
            build_docker(project, "adult@1", tmp_path / "w", wheel=tmp_path / "none.whl")
        with pytest.raises(NotFoundError):
            build_docker(project, "adult@nosuchalias", tmp_path / "a")


def test_docker_with_a_wheel(adult_project: Path, tmp_path: Path) -> None:
    wheel = tmp_path / "keel-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: copied, not installed here
    with Project(adult_project) as project:
        built = build_docker(project, "adult@production", tmp_path / "ctx", wheel=wheel)
    assert built.version == 1 and f"wheels/{wheel.name}" in built.files
    text = (built.directory / "Dockerfile").read_text()
    assert "COPY wheels/ /tmp/wheels/" in text
    assert f'KEEL_REQUIREMENT="/tmp/wheels/{wheel.name}"' in text
    assert f"!wheels/{wheel.name}" in (built.directory / ".dockerignore").read_text()


@pytest.fixture(scope="module")
def k8s_out(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("k8s") / "adult"
    result = _keel(
        "build", "k8s", "adult@1", "--project", str(adult_project), "-o", str(out),
        "--replicas", "3", "--min", "2", "--max", "8", "--cpu", "500m", "--memory", "768Mi",
        "--image", "registry.example.com/keel-adult:1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def manifests(k8s_out: Path) -> list[dict]:  # type: ignore[type-arg]
    files = sorted(k8s_out.glob("*.yaml"))
    assert [f.name for f in files] == ["deployment.yaml", "hpa.yaml", "service.yaml"]
    return [yaml.safe_load(f.read_text()) for f in files]


def test_k8s_manifests_are_plain_yaml(k8s_out: Path) -> None:
    """No ``&id001`` anchors or ``*id001`` aliases where the labels repeat (a trial found
    them in deployment.yaml): what a reader and ``kubectl diff`` show is what is there."""
    for file in sorted(k8s_out.glob("*.yaml")):
        text = file.read_text()
        assert not re.search(r"[&*]id\d+", text), (file.name, text)
    deployment = (k8s_out / "deployment.yaml").read_text()
    assert deployment.count("app.kubernetes.io/name: keel-adult") >= 2  # written in full


def test_k8s_manifests_validate(manifests: list[dict]) -> None:  # type: ignore[type-arg]
    assert {m["kind"] for m in manifests} == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for document in manifests:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_k8s_deployment(manifests: list[dict]) -> None:  # type: ignore[type-arg]
    deployment, autoscaler, service = manifests
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/keel-adult:1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "768Mi"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    (token,) = container["env"]
    assert token["name"] == "KEEL_SERVE_TOKEN"
    assert token["valueFrom"]["secretKeyRef"]["name"] == "keel-adult-token"
    assert spec["replicas"] == 3
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (2, 8)
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_k8s_invalid_documents_are_caught() -> None:
    """The schema check can fail: a probe on a bad port type, an HPA without bounds."""
    deployment, _service, autoscaler = k8s_documents("adult", 1, K8sOptions())
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGet"]["port"] = [8080]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    del autoscaler["spec"]["maxReplicas"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(autoscaler, K8S_VERSION, strict=True)


def test_k8s_bad_input(adult_project: Path, tmp_path: Path) -> None:
    for args, words in [
        (["--cpu", "lots"], "--cpu 'lots'"),
        (["--memory", "-1Gi"], "--memory '-1Gi'"),
        (["--min", "5", "--max", "2"], "--min 5, --max 2"),
        (["--image", "bad image"], "--image 'bad image'"),
    ]:
        result = _keel("build", "k8s", "adult@1", "--project", str(adult_project),
                       "-o", str(tmp_path / "k"), *args)  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert words in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "k").exists()
    with Project(adult_project) as project:
        with pytest.raises(ConfigError, match="NAME@VERSION"):
            build_k8s(project, "@1", tmp_path / "k")
        built = build_k8s(project, "adult@production", tmp_path / "k", options=K8sOptions())
    assert built.documents[0]["metadata"]["labels"]["keel.dev/version"] == "1"
