"""`keel build docker|k8s`: deployment artifacts for a registered model version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, err, out

__all__ = ["register"]

RefArg = Annotated[
    str,
    typer.Argument(
        help="The version to build: NAME@VERSION (or NAME@ALIAS).", metavar="NAME@VERSION"
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace the output directory if it is not empty.")
]


def register(app: typer.Typer) -> None:
    """Add `keel build ...` to the `keel` app."""
    group = typer.Typer(
        help="Deployment artifacts: a Docker build context, Kubernetes manifests.",
        no_args_is_help=True,
    )
    group.command("docker")(docker)
    group.command("k8s")(k8s)
    app.add_typer(group, name="build")


def docker(
    ref: RefArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Directory to write (default PROJECT/build/docker/NAME-VERSION).",
            show_default=False,
        ),
    ] = None,
    wheel: Annotated[
        Path | None,
        typer.Option(
            help="A Keel wheel to install in the image (default: a wheel of this Keel, built "
            "from its source tree; on PyPI the name 'keel' is another project)."
        ),
    ] = None,
    base_image: Annotated[
        str, typer.Option("--base-image", help="The Python base image.")
    ] = "python:3.11-slim",
    force: ForceOpt = False,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Write a Docker build context for a model version (nothing is built or run).

    The context holds the exported package (verified), a Dockerfile (non-root,
    health check, keel serve with token auth required), .dockerignore and a
    README with the docker build and run commands.
    """
    from keel.project import Project
    from keel.serve.build import build_docker

    with Project(project) as proj:
        context = build_docker(proj, ref, output, wheel=wheel, base_image=base_image, force=force)
    warnings = context.warnings
    if fmt is Format.json:
        emit_json({**context.to_json(), "warnings": list(warnings)})
        return
    out.print(
        f"wrote a Docker build context for {context.model}@{context.version} to "
        f"{context.directory}",
        markup=False,
        highlight=False,
    )
    for warning in warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    err.print(
        f"next: docker build -t keel-{context.model}:{context.version} {context.directory}",
        markup=False,
        highlight=False,
    )


def k8s(
    ref: RefArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Directory to write (default PROJECT/build/k8s/NAME-VERSION).",
            show_default=False,
        ),
    ] = None,
    replicas: Annotated[int, typer.Option(help="Pods to start with.")] = 2,
    min_replicas: Annotated[
        int | None,
        typer.Option("--min", help="Autoscaler minimum (default --replicas).", show_default=False),
    ] = None,
    max_replicas: Annotated[
        int | None,
        typer.Option(
            "--max", help="Autoscaler maximum (default 10, or --min if larger).", show_default=False
        ),
    ] = None,
    cpu: Annotated[str, typer.Option(help="CPU per pod (request and limit): 500m, 2.")] = "1",
    memory: Annotated[
        str, typer.Option(help="Memory per pod (request and limit): 512Mi, 2Gi.")
    ] = "1Gi",
    image: Annotated[
        str | None,
        typer.Option(help="The image (default keel-NAME:VERSION).", show_default=False),
    ] = None,
    force: ForceOpt = False,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Write Kubernetes manifests for a model version (nothing is applied).

    A Deployment (probes on /v2/health/ready and /live, resources, non-root,
    the token from a Secret), a Service and a HorizontalPodAutoscaler.
    """
    from keel.project import Project
    from keel.serve.build import K8sOptions, build_k8s

    options = K8sOptions(
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cpu=cpu,
        memory=memory,
        image=image,
    )
    options.check()
    with Project(project) as proj:
        manifests = build_k8s(proj, ref, output, options=options, force=force)
    if fmt is Format.json:
        emit_json(manifests.to_json())
        return
    for path in manifests.files:
        out.print(f"wrote {path}", markup=False, highlight=False)
    for warning in manifests.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    err.print(
        f"next: create the token Secret (see {manifests.directory / 'README.md'}), then "
        f"kubectl apply -f {manifests.directory}",
        markup=False,
        highlight=False,
    )
