"""Explaining one Adult row: in process, served (c=1), and the evaluate step's added cost.

    .venv/bin/python benchmarks/evaluate/explain.py [CALLS] [--shap PYTHON] [--project DIR]

Trains the Adult example with ``keel run`` in a temporary directory (the default keel.yaml:
600 trees with early stopping; or uses ``--project DIR``, an Adult project already run), then
times, each as the median and p99 of CALLS (default
1,000) calls after a warm-up:

- ``pred_contrib``: LightGBM's ``Booster.predict(x, pred_contrib=True, num_threads=1)`` on
  the transformed row (what Keel used before ``keel.evaluate.treeshap``).
- ``explain``: ``keel.load_model(...).explain([row])``: coerce, transform, TreeSHAP, fold to
  the input columns (target <= 1.5 ms).
- ``explain_json``: the same plus ``to_json()`` and ``orjson.dumps`` (what the server does).
- served ``explain`` and ``predict`` at concurrency 1 over one keep-alive connection to
  ``keel serve`` on 127.0.0.1 (target: explain p50 <= 2 ms), with the server process's CPU
  per request.
- ``keel.evaluate.treeshap`` against ``pred_contrib`` (one thread, all cores) on 1, 4, 16 and
  64 test rows (skipped for a Keel without it).

In-process rows also give this thread's CPU milliseconds per call (load-independent).
- ``importance``: ``global_importance`` on 300 test rows stratified by score and
  ``permutation_importance`` (what the evaluate step adds, given its shared prediction), and
  the register step's two cards drawn from the stored curves against re-predicting the test
  set as they did before curves were stored.

With ``--shap PYTHON`` (a Python with ``shap`` and ``lightgbm`` installed, e.g. a separate
venv), ``shap.TreeExplainer(booster)`` on a one-row DataFrame of the transformed features is
timed in that interpreter on the same model file. Prints Markdown rows.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil

import keel

ROW: dict[str, Any] = {
    "age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors",
    "education-num": 13, "marital-status": "Never-married", "occupation": "Adm-clerical",
    "relationship": "Not-in-family", "race": "White", "sex": "Male", "capital-gain": 2174,
    "capital-loss": 0, "hours-per-week": 40, "native-country": "United-States",
}  # fmt: skip

SHAP_SCRIPT = """
import sys, time, numpy as np, pandas as pd, lightgbm as lgb, shap
booster = lgb.Booster(model_file=sys.argv[1])
x = pd.DataFrame(np.load(sys.argv[2]), columns=booster.feature_name())
explainer = shap.TreeExplainer(booster)
calls = int(sys.argv[3])
for _ in range(100):
    explainer.shap_values(x)
samples = []
for _ in range(calls):
    t = time.perf_counter(); explainer.shap_values(x); samples.append(time.perf_counter() - t)
exact = np.asarray(explainer.shap_values(x)).ravel()
print(float(np.median(samples) * 1000), float(np.percentile(samples, 99) * 1000),
      ",".join(repr(float(v)) for v in exact), repr(float(np.ravel(explainer.expected_value)[0])))
"""


def timed(fn: Callable[[], object], calls: int, warm: int = 50) -> tuple[float, float]:
    """Median and p99 milliseconds over ``calls`` calls, after a warm-up."""
    p50, p99, _ = timed_cpu(fn, calls, warm)
    return p50, p99


def timed_cpu(fn: Callable[[], object], calls: int, warm: int = 50) -> tuple[float, float, float]:
    """Median and p99 milliseconds over ``calls`` calls after a warm-up, and the mean CPU
    milliseconds of this thread per call (load-independent, unlike the wall time)."""
    for _ in range(max(warm, calls // 10)):
        fn()
    samples = np.empty(calls)
    cpu = time.thread_time()
    for i in range(calls):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    cpu = (time.thread_time() - cpu) / calls
    return float(np.median(samples) * 1e3), float(np.percentile(samples, 99) * 1e3), cpu * 1e3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def served(root: Path, calls: int) -> dict[str, tuple[float, float, float]]:
    port = _free_port()
    command = [sys.executable, "-m", "keel.cli", "serve", "--project", str(root), "--port",
               str(port)]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/v2/health/live").status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            body = orjson.dumps({"instances": [ROW]})
            headers = {"content-type": "application/json"}
            out = {}
            server = psutil.Process(process.pid)
            for route in ("explain", "predict"):
                path = f"/v1/models/adult/{route}"
                for _ in range(5):  # the first is threaded and measured, the rest may be inline
                    assert client.post(path, content=body, headers=headers).status_code == 200
                used = sum(server.cpu_times()[:2])
                p50, p99 = timed(lambda p=path: client.post(p, content=body, headers=headers),
                                 calls)  # fmt: skip
                warm_calls = calls + max(50, calls // 10)
                cpu = (sum(server.cpu_times()[:2]) - used) / warm_calls * 1e3  # server's, per call
                out[route] = (p50, p99, cpu)
            return out
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


def peer(python: str, booster: Any, x: np.ndarray, calls: int, work: Path) -> list[str]:
    model_file, row_file = work / "model.txt", work / "row.npy"
    booster.save_model(str(model_file))
    np.save(row_file, x)
    result = subprocess.run(
        [python, "-c", SHAP_SCRIPT, str(model_file), str(row_file), str(calls)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.split()


def main(calls: int, shap_python: str | None, project: str | None) -> None:
    from keel.evaluate.explain import explain_rows, global_importance

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(project) if project else keel.init(Path(tmp) / "adult", example="adult")
        if not project:
            started = time.perf_counter()
            steps = keel.run(root)["steps"]
            seconds = {s["step"]: s["seconds"] for s in steps}
            print(f"keel run: {time.perf_counter() - started:.1f} s: {seconds}", file=sys.stderr)
        model = keel.load_model("adult", project=root)
        package = model.package
        x = package.pipeline.transform_rows([ROW])
        booster = package.model.booster_
        rows: dict[str, tuple[float, float, float]] = {
            "LightGBM pred_contrib on the transformed row, one thread": timed_cpu(
                lambda: booster.predict(x, pred_contrib=True, num_threads=1), calls
            ),
            "`Model.explain([row])` (coerce, transform, TreeSHAP, fold)": timed_cpu(
                lambda: model.explain([ROW]), calls
            ),
            "the same + `to_json()` + `orjson.dumps` (the server's work)": timed_cpu(
                lambda: orjson.dumps(explain_rows(package, [ROW]).to_json()), calls
            ),
        }
        print(f"| explaining one Adult row ({booster.num_trees()} trees) | median ms | p99 ms "
              "| CPU ms/call |\n|---|---|---|---|")  # fmt: skip
        for name, (p50, p99, cpu) in rows.items():
            print(f"| {name} | {p50:.3f} | {p99:.3f} | {cpu:.3f} |")
        for route, (p50, p99, cpu) in served(root, calls).items():
            print(f"| served `{route}`, c=1, keep-alive (CPU: the server's) | {p50:.3f} | "
                  f"{p99:.3f} | {cpu:.3f} |")  # fmt: skip
        _batches(package, root, calls)
        if shap_python:
            p50, p99, values, base = peer(shap_python, booster, x, calls, Path(tmp))
            ours = booster.predict(x, pred_contrib=True).ravel()
            theirs = np.array([float(v) for v in values.split(",")] + [float(base)])
            same = bool(np.allclose(ours, theirs, atol=1e-9))
            print(f"| `shap.TreeExplainer` on a 1-row DataFrame (same values: {same}) | "
                  f"{float(p50):.3f} | {float(p99):.3f} |")  # fmt: skip
        _importance(package, root, global_importance)


def _batches(package: Any, root: Path, calls: int) -> None:
    """Keel's TreeSHAP (``keel.evaluate.treeshap``, where this Keel has it) against
    ``pred_contrib`` on one thread and on all cores, for 1, 4, 16 and 64 test rows."""
    try:
        from keel.evaluate.treeshap import TreeShap
    except ImportError:
        return
    from keel.config import load_config
    from keel.data.sources import read_source

    cfg = load_config(root, env="")
    assert cfg.data.test is not None
    test = package.pipeline.transform(read_source(cfg.data.test, root).drop(["income"]))
    booster = package.model.booster_
    shap = TreeShap.of(booster, test.shape[1])
    assert shap is not None
    print("\n| rows | keel.treeshap ms (CPU ms) | pred_contrib 1 thread | pred_contrib all "
          "threads | max abs difference |\n|---|---|---|---|---|")  # fmt: skip
    for n in (1, 4, 16, 64):
        x = test[:n]
        repeat = max(20, calls // (4 * n))
        ours = timed_cpu(lambda x=x: shap(x), repeat, warm=5)
        one = timed_cpu(lambda x=x: booster.predict(x, pred_contrib=True, num_threads=1),
                        repeat, warm=5)  # fmt: skip
        every = timed_cpu(lambda x=x: booster.predict(x, pred_contrib=True), repeat, warm=5)
        diff = np.abs(shap(x).reshape(n, -1) - booster.predict(x, pred_contrib=True)).max()
        print(f"| {n} | {ours[0]:.3f} ({ours[2]:.3f}) | {one[0]:.3f} ({one[2]:.3f}) | "
              f"{every[0]:.3f} ({every[2]:.3f}) | {diff:.1e} |")  # fmt: skip


def _importance(package: Any, root: Path, global_importance: Any) -> None:
    """What the evaluate step adds (mean |SHAP|, permutation importance) and what the register
    step's card costs with the stored curves against predicting the test set again."""
    from keel.config import load_config
    from keel.data.sources import read_source
    from keel.evaluate.importance import permutation_importance
    from keel.project import Project
    from keel.registry import card
    from keel.train.target import encode_target

    cfg = load_config(root, env="")
    assert cfg.data.test is not None
    table = read_source(cfg.data.test, root)
    labels = table.column("income")
    positive = cfg.data.positive_label
    y, _ = encode_target(labels, task="binary", target="income", positive_label=positive,
                         classes=package.classes)  # fmt: skip
    x = package.pipeline.transform(table.drop(["income"]))
    prediction = package.model.predict(x)  # the evaluate step predicts the test set once
    p50, _ = timed(lambda: global_importance(package, x, prediction=prediction), 7, warm=1)
    print(f"\nglobal importance (mean |SHAP|) on 300 of {len(x):,} test rows: {p50:.1f} ms")
    p50, _ = timed(lambda: permutation_importance(package, x, y, prediction=prediction), 7, warm=1)
    print(f"permutation importance, 14 columns x 5 repeats x 2,000 rows: {p50:.1f} ms")
    with Project(root) as project:
        version = project.metadata.resolve("adult@1")
        stored, _ = timed(lambda: card.store_cards(project, version), 7, warm=1)
        original = card.Evaluation.from_json

        def before(data: Any) -> Any:  # an evaluation without stored curves: re-predicts
            return original({k: v for k, v in data.items() if k != "curves"})

        card.Evaluation.from_json = before  # type: ignore[method-assign]
        try:
            again, _ = timed(lambda: card.store_cards(project, version), 7, warm=1)
        finally:
            card.Evaluation.from_json = original  # type: ignore[method-assign]
    print(
        f"register's cards (HTML + Markdown): {stored:.1f} ms from the stored curves, "
        f"{again:.1f} ms re-predicting the test set (before)"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    options: dict[str, str | None] = {"--shap": None, "--project": None}
    for flag in options:
        if flag in args:
            at = args.index(flag)
            options[flag] = args[at + 1]
            del args[at : at + 2]
    main(int(args[0]) if args else 1000, options["--shap"], options["--project"])
