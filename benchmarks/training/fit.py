"""Tracked training vs a bare ``lightgbm.train``: Adult at 48,842 rows and replicated to 1M.

Keel's column is what the pipeline's train step does (run, ``keel.train.fit`` with learning
curves, model into the artifact store, facts recorded); MLflow's is ``mlflow.lightgbm.autolog()``
(each side with its own bare fit in the same process, so the ratios compare like with like).
Targets: Keel <= 1.2x at 48,842 rows and <= 1.05x at 1M. Knobs: ``FIT_SIZES`` (48842,1000000),
``FIT_ROUNDS`` (3 at Adult size, 1 above), ``FIT_MLFLOW=0`` skips MLflow.

Both sides run with ``OMP_WAIT_POLICY=PASSIVE``: on a machine shared with other work, OpenMP's
default spin-waiting makes LightGBM's timings swing by 10x between identical fits.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tracking import KEEL_PYTHON, MLFLOW_PYTHON, WORK  # noqa: E402

PART = "fit"
TITLE = "Tracked training vs bare lightgbm.train"
TIMEOUT_S = 900


def run(quick: bool = False) -> dict[str, Any]:
    """Raw per-size timings of both sides."""
    default = "48842,200000" if quick else "48842,1000000"
    sizes = [int(s) for s in os.environ.get("FIT_SIZES", default).split(",")]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    results = []
    for rows in sizes:
        rounds = os.environ.get("FIT_ROUNDS") or ("1" if quick else "3" if rows < 100_000 else "1")
        directory = _data(rows)
        keel = _side([str(KEEL_PYTHON), str(HERE / "fit_keel.py"), str(directory), rounds], env)
        entry: dict[str, Any] = {"rows": rows, "keel": keel}
        if os.environ.get("FIT_MLFLOW", "1") != "0" and MLFLOW_PYTHON.exists() and "native" in keel:
            command = [str(MLFLOW_PYTHON), str(HERE / "fit_mlflow.py"), str(directory), rounds,
                       json.dumps(keel["native"])]  # fmt: skip
            entry["mlflow"] = _side(command, env)
        results.append(entry)
    return {"sizes": results}


def _data(rows: int) -> Path:
    target = str(WORK / f"fit-{rows}")
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import fit_data; from pathlib "
            f"import Path; fit_data.write(Path({target!r}), {rows})")  # fmt: skip
    subprocess.run([str(KEEL_PYTHON), "-c", code], check=True, timeout=TIMEOUT_S)
    return WORK / f"fit-{rows}"


def _side(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def render(raw: dict[str, Any]) -> str:
    """The RESULTS.md section: median seconds and ratios per size."""
    lines = [
        f"### {TITLE}",
        "",
        "LightGBM, 100 trees, the same native parameters and validation set on both sides "
        "(learning curves recorded, no early stopping); medians over rounds, seconds.",
        "",
        "| rows | bare | Keel tracked | Keel / bare | MLflow bare | MLflow autolog "
        "| autolog / bare |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in raw["sizes"]:
        keel, mlflow = entry["keel"], entry.get("mlflow", {})
        if "error" in keel:
            lines.append(f"| {entry['rows']:,} | Keel failed: `{_last(keel['error'])}` |")
            continue
        bare, tracked = statistics.median(keel["bare"]), statistics.median(keel["tracked"])
        cells = [f"{entry['rows']:,}", f"{bare:.2f}", f"{tracked:.2f}", f"{tracked / bare:.2f}x"]
        if "autolog" in mlflow:
            m_bare, autolog = (
                statistics.median(mlflow["bare"]),
                statistics.median(mlflow["autolog"]),
            )
            cells += [f"{m_bare:.2f}", f"{autolog:.2f}", f"{autolog / m_bare:.1f}x"]
        else:
            cells += ["-", "-", _last(mlflow["error"]) if "error" in mlflow else "not run"]
        lines.append("| " + " | ".join(cells) + " |")
    rounds = ", ".join(f"{e['rows']:,}: {e['keel'].get('rounds', '-')}" for e in raw["sizes"])
    lines += ["", f"Rounds per size: {rounds}. Targets: Keel <= 1.2x at 48,842 rows, "
              "<= 1.05x at 1M."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _last(text: str) -> str:
    return text.strip().splitlines()[-1][:200] if text.strip() else "failed"


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=1))
    print(render(result))
