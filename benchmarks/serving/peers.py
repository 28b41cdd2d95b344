"""Side venvs for the peers and tools the serving benchmark uses, and wrk.

Each venv lives in ``benchmarks/.peers/<name>`` (gitignored), is built with ``python3 -m venv``
and is left alone when it was built from the same requirement list and still imports. A failed
install is recorded (the caller skips that peer) and never stops the benchmark.

Run directly to prepare everything: ``python benchmarks/serving/peers.py [mlflow] [tools]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
PEERS_DIR = BENCH_DIR / ".peers"
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class VenvSpec:
    name: str
    requirements: tuple[str, ...]
    check: str  # python code that must run without error in the venv


SPECS = {
    "mlflow": VenvSpec(
        "mlflow",
        ("mlflow==3.17.2", "lightgbm==4.7.0", "pandas", "pyarrow"),
        "import mlflow, mlflow.lightgbm, lightgbm, pandas, pyarrow, uvicorn",
    ),
    "tools": VenvSpec("tools", ("py-spy",), "import shutil, sys; assert shutil.which('py-spy')"),
}


@dataclass(frozen=True)
class VenvStatus:
    name: str
    python: Path | None  # None when the venv could not be built
    note: str

    def bin(self, program: str) -> Path:
        assert self.python is not None
        return self.python.parent / program


def _stamp_text(spec: VenvSpec) -> str:
    return "\n".join(spec.requirements) + "\n"


def _works(python: Path, spec: VenvSpec) -> bool:
    if not python.exists():
        return False
    env = dict(os.environ, PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    probe = subprocess.run(
        [str(python), "-c", spec.check], capture_output=True, env=env, timeout=120, check=False
    )
    return probe.returncode == 0


def ensure_venv(name: str, *, quiet: bool = False) -> VenvStatus:
    """Build (or reuse) the venv ``name``; never raises for an install failure."""
    spec = SPECS[name]
    root = PEERS_DIR / name
    python = root / "bin" / "python"
    stamp = root / ".requirements.txt"
    if stamp.exists() and stamp.read_text() == _stamp_text(spec) and _works(python, spec):
        return VenvStatus(name, python, "reused")
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log = PEERS_DIR / f"{name}.install.log"
    if not quiet:
        print(f"[peers] installing venv '{name}' ({' '.join(spec.requirements)}); log: {log}")
    if root.exists():
        shutil.rmtree(root)
    try:
        with log.open("wb") as out:
            for cmd in (
                ["python3", "-m", "venv", str(root)],
                [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                [str(python), "-m", "pip", "install", "-q", *spec.requirements],
            ):
                subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S, check=True
                )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
        return VenvStatus(name, None, f"install failed: {exc!r}; log tail: {tail.strip()}")
    if not _works(python, spec):
        return VenvStatus(name, None, f"installed but '{spec.check}' fails; see {log}")
    stamp.write_text(_stamp_text(spec))
    return VenvStatus(name, python, "installed")


def ensure_wrk() -> str:
    """Path to wrk, installing it with apt-get when it is missing (as the peer setup.sh does)."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, timeout=600)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, timeout=600)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return found


if __name__ == "__main__":
    for wanted in sys.argv[1:] or list(SPECS):
        status = ensure_venv(wanted)
        print(f"{wanted}: {status.note} ({status.python})")
