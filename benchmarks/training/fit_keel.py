"""Keel's side of the tracked-fit benchmark: bare ``lightgbm.train`` vs Keel's tracked fit.

usage: python fit_keel.py DATA_DIR ROUNDS   (prints one JSON document)

Tracked = what the pipeline's train step does around the fit: start a run (environment
captured), ``keel.train.fit`` with a per-iteration callback, save the model into the
content-addressed artifact store, finish the run with its facts (params, metrics, learning
curves). Bare = ``lgb.train`` with the same native parameters and the same validation set
(both evaluate the same metrics each round; neither stops early). The two alternate, and each
round runs in the same process, so they see the same machine.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_data import PARAMS, SEED, load

from keel.store import ArtifactStore, MetadataStore
from keel.store.environment import capture_environment
from keel.train import fit
from keel.train.lightgbm import _NATIVE, check_params


def native_params() -> dict[str, Any]:
    """The parameters LightGBMTrainer hands to lgb.train for a binary task."""
    checked = check_params(PARAMS)
    native: dict[str, Any] = {
        "objective": "binary", "metric": ["binary_logloss", "auc"], "first_metric_only": True,
        "verbosity": -1, "seed": SEED, "deterministic": True, "num_threads": 0,
    }  # fmt: skip
    native.update({lgb_name: getattr(checked, name) for name, lgb_name in _NATIVE.items()})
    return native


def bare(data: dict[str, np.ndarray]) -> float:
    import lightgbm as lgb

    started = time.perf_counter()
    train_set = lgb.Dataset(data["x"], label=data["y"], free_raw_data=True)
    valid_set = lgb.Dataset(data["x_valid"], label=data["y_valid"], reference=train_set)
    lgb.train(native_params(), train_set, num_boost_round=PARAMS["n_estimators"],
              valid_sets=[valid_set], valid_names=["validation"])  # fmt: skip
    return time.perf_counter() - started


def tracked(data: dict[str, np.ndarray], store: MetadataStore, artifacts: ArtifactStore,
            root: Path) -> float:  # fmt: skip
    started = time.perf_counter()
    cpu0 = time.process_time()
    run = store.start_run("train", cache_key="bench", config_hash="c", code_version="bench",
                          environment=capture_environment(root))  # fmt: skip
    result = fit(data["x"], data["y"], flavor="lightgbm", task="binary", params=PARAMS, seed=SEED,
                 x_valid=data["x_valid"], y_valid=data["y_valid"],
                 on_iteration=lambda i, metrics: None)  # fmt: skip
    ((name, blob),) = result.model.save().items()
    model = artifacts.put(blob, kind="model-file", metadata={"file": name})
    store.record_artifact(model)
    store.finish_run(run.id, status="succeeded", outputs={"model": model.sha256},
                     cpu_seconds=time.process_time() - cpu0,
                     peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                     facts=result.facts)  # fmt: skip
    elapsed = time.perf_counter() - started
    assert len(store.get_tracked_run(run.id).history or {}) == 2, "learning curves not recorded"
    return elapsed


def main() -> None:
    directory, rounds = Path(sys.argv[1]), int(sys.argv[2])
    data = load(directory)
    times: dict[str, list[float]] = {"bare": [], "tracked": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = MetadataStore(f"sqlite:///{root}/keel.db")
        artifacts = ArtifactStore(str(root / "artifacts"))
        bare(data)  # warm-up: imports, page cache, OpenMP threads
        for i in range(rounds):
            for side in ("bare", "tracked") if i % 2 == 0 else ("tracked", "bare"):
                seconds = bare(data) if side == "bare" else tracked(data, store, artifacts, root)
                times[side].append(seconds)
        store.close()
    native = {**native_params(), "num_boost_round": PARAMS["n_estimators"]}
    print(json.dumps({"rows": len(data["y"]), "rounds": rounds, "native": native, **times}))


if __name__ == "__main__":
    main()
