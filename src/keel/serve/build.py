"""Deployment artifacts for a registered version: a Docker build context and Kubernetes manifests.

:func:`build_docker` writes a directory ``docker build`` takes as it is:

    model.tar      the version exported by the registry (keel models export), verified here
    keel.yaml      a serving-only project: serve on 0.0.0.0:8080, token auth required
    Dockerfile     a slim Python base, Keel with the extras the model's flavor needs, a
                   non-root user, the package imported (and so verified again) at build time,
                   ``keel serve`` as the entrypoint, a HEALTHCHECK on /v2/health/ready
    .dockerignore  only those files go into the image
    README.md      how to build and run it

The image holds no secret: the server takes its token from ``KEEL_SERVE_TOKEN`` at run time
(``docker run -e``, or a Kubernetes Secret) and refuses to start without one.

:func:`build_k8s` writes a Deployment (readiness on /v2/health/ready, liveness on
/v2/health/live, resources, a non-root security context, the token from a Secret), a Service
and a HorizontalPodAutoscaler, as YAML.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from keel.errors import ConfigError
from keel.version import __version__

__all__ = [
    "FLAVOR_EXTRAS",
    "PORT",
    "DockerContext",
    "K8sManifests",
    "K8sOptions",
    "build_docker",
    "build_k8s",
    "k8s_documents",
    "views_warning",
]

PORT = 8080
"""The port the server listens on inside the container."""
UID = 10001
"""The container's non-root user and group id."""
BASE_IMAGE = "python:3.11-slim"
HOME = "/srv/keel"
ARCHIVE = "model.tar"
TOKEN_KEY = "token"
FLAVOR_EXTRAS: dict[str, tuple[str, ...]] = {"xgboost": ("xgboost",), "mlp": ("torch",)}
"""Keel extras a flavor's model needs at serving time (lightgbm and sklearn: none)."""

_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_DNS = re.compile(r"[^a-z0-9-]+")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")


@dataclass(frozen=True)
class DockerContext:
    """A written Docker build context."""

    directory: Path
    model: str
    version: int
    package_sha256: str
    extras: tuple[str, ...]
    files: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "model": self.model,
            "version": self.version,
            "package_sha256": self.package_sha256,
            "extras": list(self.extras),
            "files": list(self.files),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class K8sOptions:
    """Kubernetes settings: replicas, autoscaling bounds, per-pod resources, the image."""

    replicas: int = 2
    min_replicas: int | None = None
    max_replicas: int | None = None
    cpu: str = "1"
    memory: str = "1Gi"
    image: str | None = None
    cpu_target: int = 70

    def bounds(self) -> tuple[int, int]:
        """``(min, max)`` replicas for the autoscaler (min defaults to ``replicas``)."""
        low = self.replicas if self.min_replicas is None else self.min_replicas
        high = max(low, 10) if self.max_replicas is None else self.max_replicas
        return low, high

    def check(self) -> None:
        """Raises ConfigError naming the bad option and its fix."""
        low, high = self.bounds()
        if self.replicas < 1 or low < 1 or high < low:
            raise ConfigError(
                f"replicas {self.replicas}, --min {low}, --max {high}: need 1 <= --min <= --max "
                "and --replicas >= 1.",
                field="replicas",
            )
        for name, value in (("cpu", self.cpu), ("memory", self.memory)):
            match = _QUANTITY.match(value)
            if match is None or float(match.group(1)) <= 0:
                raise ConfigError(
                    f"--{name} {value!r} is not a Kubernetes quantity: e.g. 500m or 2 (CPU), "
                    "512Mi or 2Gi (memory).",
                    field=name,
                )
        if self.image is not None and not _IMAGE.match(self.image):
            raise ConfigError(
                f"--image {self.image!r} is not an image reference: e.g. "
                "registry.example.com/keel-adult:3.",
                field="image",
            )


@dataclass(frozen=True)
class K8sManifests:
    """Written manifests: the files (one per kind, then README.md), and the documents."""

    directory: Path
    files: tuple[Path, ...]
    documents: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "files": [str(f) for f in self.files],
            "warnings": list(self.warnings),
        }


def _resolve(project: Any, ref: str) -> Any:
    """The registry version ``ref`` names (NAME@VERSION or NAME@ALIAS)."""
    if "@" not in ref or not ref.split("@", 1)[0] or not ref.split("@", 1)[1]:
        raise ConfigError(
            f"{ref!r} is not NAME@VERSION: name the version to build, e.g. adult@3 or "
            "adult@production (keel models list shows them).",
            field="model",
        )
    return project.metadata.resolve(ref)


def views_warning(project: Any, version: Any) -> str | None:
    """What an image of a version trained with feature views cannot do, or None.

    The project's own server fills a request's view features from its online store; the
    image's serving-only project has no feature views and no online store, so its clients
    must send every input column.
    """
    from keel.features.store import training_views

    used = training_views(project, version.package_sha256)
    if used is None:
        return None
    views = used["views"]
    keys = sorted({k for spec in views.values() for k in spec["entities"]})
    features = sorted({f for spec in views.values() for f in spec["features"]})
    shown = ", ".join(features[:6]) + (
        f" and {len(features) - 6} more" if len(features) > 6 else ""
    )
    return (
        f"{version.name}@{version.version} was trained with feature views "
        f"({', '.join(sorted(views))}): the image has no feature store, so its requests must "
        f"carry the view features too ({shown}), not only the entity keys "
        f"({', '.join(keys)}) that `keel serve` in this project looks them up by."
    )


def _prepare(output: Path, force: bool) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        if not force or not output.is_dir():
            raise ConfigError(
                f"{output} exists and is not empty; choose another --output or pass --force.",
                field="output",
            )
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)


def dns_name(model: str) -> str:
    """A Kubernetes object name for a model: ``keel-<model>``, lower case, [a-z0-9-]."""
    cleaned = _DNS.sub("-", model.lower()).strip("-") or "model"
    return f"keel-{cleaned}"[:53].rstrip("-")


def build_docker(
    project: Any,
    ref: str,
    output: Path | None = None,
    *,
    wheel: Path | None = None,
    base_image: str = BASE_IMAGE,
    force: bool = False,
) -> DockerContext:
    """Write a Docker build context for ``ref`` (``NAME@VERSION`` or ``NAME@ALIAS``).

    Args:
        project: A :class:`keel.project.Project`.
        ref: The version to bake in.
        output: The directory (default ``<project>/build/docker/<name>-<version>``).
        wheel: A Keel wheel to install in the image, with the flavor's extras (default: a
            wheel of the running Keel built from its source tree into the context; on PyPI
            the name ``keel`` is another project, so the image never installs it by name).
        base_image: The Python base image.
        force: Replace a non-empty ``output``.

    Raises:
        ConfigError: ``ref`` is not NAME@VERSION, ``output`` is not empty, ``wheel`` is not a
            wheel file, or no ``wheel`` was given and Keel runs from no source tree to build
            one from (:func:`keel.serve.source_wheel.build_wheel`).
        NotFoundError: No such model or version.
        IntegrityError: The exported package does not verify.
    """
    from keel.registry.exchange import export_package, read_archive
    from keel.serve.source_wheel import build_wheel

    version = _resolve(project, ref)
    if wheel is not None and (not wheel.is_file() or wheel.suffix != ".whl"):
        raise ConfigError(f"--wheel {wheel} is not a wheel file (.whl).", field="wheel")
    target = output or project.root / "build" / "docker" / f"{version.name}-{version.version}"
    _prepare(target, force)
    archive = target / ARCHIVE
    export_package(f"{version.name}@{version.version}", archive, project=project.root)
    contents = read_archive(archive)
    contents.verify(project).raise_for_failure()
    manifest = orjson.loads(contents.manifest)
    flavor = str(manifest.get("flavor", "lightgbm"))
    extras = FLAVOR_EXTRAS.get(flavor, ())
    files = ["Dockerfile", ".dockerignore", "README.md", "keel.yaml", ARCHIVE]
    if wheel is None:
        wheel = build_wheel(target / "wheels")
    else:
        (target / "wheels").mkdir()
        shutil.copy2(wheel, target / "wheels" / wheel.name)
    files.append(f"wheels/{wheel.name}")
    install = f"/tmp/wheels/{wheel.name}" + (f"[{','.join(extras)}]" if extras else "")
    (target / "keel.yaml").write_text(_serving_config(version.name, manifest))
    (target / "Dockerfile").write_text(_dockerfile(version.name, base_image, install))
    (target / ".dockerignore").write_text("*\n" + "".join(f"!{f}\n" for f in files[3:]))
    warning = views_warning(project, version)
    readme = _readme(version.name, version.version, flavor)
    (target / "README.md").write_text(
        readme + (f"\n**Feature views.** {warning}\n" if warning else "")
    )
    return DockerContext(
        directory=target,
        model=version.name,
        version=version.version,
        package_sha256=version.package_sha256,
        extras=extras,
        files=tuple(sorted(files)),
        warnings=(warning,) if warning else (),
    )


def _serving_config(name: str, manifest: dict[str, Any]) -> str:
    """A keel.yaml for a project that only serves: no data to train on, the model imported."""
    task = str(manifest.get("task", "binary"))
    config = {
        "project": f"{name}-serving",
        "data": {"train": {"path": "data/none.csv"}, "target": "target"},
        "model": {"name": name, "flavor": manifest.get("flavor", "lightgbm"), "task": task},
        "serve": {"host": "0.0.0.0", "port": PORT, "auth": "required"},
    }
    head = (
        "# A serving-only project: the model is imported from model.tar when the image is\n"
        "# built; data: and model: are here only because every keel.yaml names them.\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False)


def _dockerfile(name: str, base: str, install: str) -> str:
    probe = (
        "import sys, urllib.request; "
        f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{PORT}/v2/health/ready', "
        "timeout=2).status != 200)"
    )
    return f"""\
# Keel model server for {name}: docker build -t keel-{name} .
FROM {base}

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    OMP_NUM_THREADS=1

# LightGBM and XGBoost need the OpenMP runtime
RUN apt-get update \\
    && apt-get install -y --no-install-recommends libgomp1 \\
    && rm -rf /var/lib/apt/lists/*

# this Keel, as a wheel: on PyPI the name `keel` is another project
COPY wheels/ /tmp/wheels/
ARG KEEL_REQUIREMENT="{install}"
RUN pip install "${{KEEL_REQUIREMENT}}" && rm -rf /tmp/wheels

RUN groupadd --system --gid {UID} keel \\
    && useradd --system --uid {UID} --gid keel --home-dir {HOME} --shell /usr/sbin/nologin keel \\
    && mkdir -p {HOME} && chown keel:keel {HOME}
WORKDIR {HOME}
COPY --chown=keel:keel keel.yaml {ARCHIVE} ./
USER {UID}:{UID}

# the package is verified (hashes, signature, model-file types) again as it is imported
RUN keel models import {ARCHIVE} --project {HOME} \\
    && keel models verify {name} --project {HOME} \\
    && rm {ARCHIVE}

EXPOSE {PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \\
    CMD ["python", "-c", "{probe}"]

# token auth is required: pass the token as KEEL_SERVE_TOKEN (docker run -e, a k8s Secret)
ENTRYPOINT ["keel", "serve", "--project", "{HOME}", "--host", "0.0.0.0", "--port", "{PORT}", \\
            "--auth", "required"]
CMD ["{name}"]
"""


def _readme(name: str, version: int, flavor: str) -> str:
    return f"""\
# {name}@{version}: Keel model server image

Built by `keel build docker {name}@{version}` ({flavor} model, Keel {__version__}).

    docker build -t keel-{name}:{version} .
    export KEEL_SERVE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    docker run --rm -p {PORT}:{PORT} -e KEEL_SERVE_TOKEN keel-{name}:{version}
    curl -H "Authorization: Bearer $KEEL_SERVE_TOKEN" -H 'content-type: application/json' \\
        -d '{{"instances": [{{...}}]}}' http://127.0.0.1:{PORT}/v1/models/{name}/predict

The server refuses to start without a token (`--auth required`); the token has the `predict`
and `read` scopes. Extra arguments after the image name replace the model reference
(e.g. `{name} --workers 4` for four server processes). Keel is installed from the wheel under
`wheels/` (the one given with `--wheel`, else one built from the source tree of the Keel that
wrote this context), as `KEEL_REQUIREMENT` (override with `--build-arg`; on PyPI the name
`keel` is another project). The image runs as the non-root user {UID} and
checks `/v2/health/ready` every 10 s.
"""


def k8s_documents(name: str, version: int, options: K8sOptions) -> list[dict[str, Any]]:
    """The Deployment, Service and HorizontalPodAutoscaler for ``name@version``."""
    options.check()
    app = dns_name(name)
    low, high = options.bounds()
    labels = {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "keel",
    }
    annotated = {
        **labels,
        "keel.dev/model": _DNS.sub("-", name)[:63],
        "keel.dev/version": str(version),
    }
    image = options.image or f"{app}:{version}"
    probe = {"port": "http"}
    container = {
        "name": "server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": [name],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {
                "name": "KEEL_SERVE_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": f"{app}-token", "key": TOKEN_KEY}},
            }
        ],
        "resources": {
            "requests": {"cpu": options.cpu, "memory": options.memory},
            "limits": {"cpu": options.cpu, "memory": options.memory},
        },
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", **probe},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", **probe},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", **probe},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": annotated},
        "spec": {
            "replicas": max(low, min(options.replicas, high)),
            "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
            "template": {
                "metadata": {"labels": annotated},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": 40,
                    "containers": [container],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "selector": {"app.kubernetes.io/name": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": options.cpu_target,
                        },
                    },
                }
            ],
        },
    }
    return [deployment, service, autoscaler]


class _Plain(yaml.SafeDumper):
    """Writes a value shared between places in full at each (no ``&id001``/``*id001``)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def build_k8s(
    project: Any,
    ref: str,
    output: Path | None = None,
    *,
    options: K8sOptions | None = None,
    force: bool = False,
) -> K8sManifests:
    """Write ``deployment.yaml``, ``service.yaml`` and ``hpa.yaml`` for ``ref``.

    Args:
        project: A :class:`keel.project.Project`.
        ref: ``NAME@VERSION`` or ``NAME@ALIAS`` (the image is ``keel-NAME:VERSION`` unless
            ``options.image``).
        output: The directory (default ``<project>/build/k8s/<name>-<version>``).
        options: Replicas, autoscaling bounds, resources, image.
        force: Replace a non-empty ``output``.

    Raises:
        ConfigError: A bad reference, option or output directory (names it).
        NotFoundError: No such model or version.
    """
    chosen = options or K8sOptions()
    version = _resolve(project, ref)
    documents = k8s_documents(version.name, version.version, chosen)  # checks the options
    target = output or project.root / "build" / "k8s" / f"{version.name}-{version.version}"
    _prepare(target, force)
    written = []
    for document, file in zip(
        documents, ("deployment.yaml", "service.yaml", "hpa.yaml"), strict=True
    ):
        path = target / file
        path.write_text(yaml.dump(document, Dumper=_Plain, sort_keys=False))
        written.append(path)
    secret = f"{dns_name(version.name)}-token"
    warning = views_warning(project, version)
    written.append(target / "README.md")  # (the "next:" line points to it)
    (target / "README.md").write_text(
        f"# {version.name}@{version.version} on Kubernetes\n\n"
        f"    kubectl create secret generic {secret} \\\n"
        f"        --from-literal={TOKEN_KEY}=$(python -c 'import secrets; "
        "print(secrets.token_urlsafe(32))')\n"
        f"    kubectl apply -f {target.name}/\n\n"
        f"The image ({chosen.image or dns_name(version.name) + ':' + str(version.version)}) is "
        f"the one `keel build docker {version.name}@{version.version}` writes the context for.\n"
        + (f"\n**Feature views.** {warning}\n" if warning else "")
    )
    return K8sManifests(
        directory=target,
        files=tuple(written),
        documents=tuple(documents),
        warnings=(warning,) if warning else (),
    )
