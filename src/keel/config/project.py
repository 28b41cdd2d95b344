"""A whole keel.yaml (:class:`KeelConfig`) and its smaller sections: evaluation gates,
registry, serving, monitoring, stores."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from keel.config.base import Frozen
from keel.config.card import CardConfig
from keel.config.data import DataConfig
from keel.config.evaluate import EvaluateConfig
from keel.config.features import FeaturesConfig, FeatureViewConfig
from keel.config.monitor import MonitorConfig
from keel.config.pipeline import PipelineConfig
from keel.config.registry import RegistryConfig
from keel.config.retrain import RetrainConfig
from keel.config.training import (
    AutoMLConfig,
    ModelConfig,
    ResourcesConfig,
    SearchConfig,
    SplitConfig,
)
from keel.plugins import EXECUTORS

# the built-in tasks' test metrics (keel.evaluate.metrics and its bootstrap); a gate reading
# one of the other kind's (classifier vs regression) can never be judged
_TASK_METRICS = {
    "binary": ("roc_auc", "accuracy", "log_loss", "precision", "recall", "positive_rate",
               "base_rate", "brier"),
    "multiclass": ("accuracy", "macro_f1", "log_loss", "roc_auc"),
    "regression": ("rmse", "mae", "r2", "mean_prediction"),
}  # fmt: skip
_CLASSIFIER_ONLY = frozenset(_TASK_METRICS["binary"] + _TASK_METRICS["multiclass"])
_OTHER_TASKS_METRICS = {
    "binary": frozenset(_TASK_METRICS["regression"]),
    "multiclass": frozenset(_TASK_METRICS["regression"]),
    "regression": _CLASSIFIER_ONLY,
}

__all__ = [
    "EvaluateConfig",
    "KeelConfig",
    "MonitorConfig",
    "RegistryConfig",
    "ServeConfig",
    "StoreConfig",
]


class ServeConfig(Frozen):
    """The online server: address, limits, auth, threads, prediction log and reload."""

    host: str = Field(
        default="127.0.0.1",
        description="The address keel serve binds (0.0.0.0: every interface).",
    )
    port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        description="The port keel serve listens on.",
    )
    log_predictions: bool = Field(
        default=True,
        description="Append every request's inputs and predictions to .keel/predictions/ (what "
        "keel monitor reads).",
    )
    auth: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="Token auth (keel tokens create): auto = required when binding to anything "
        "but loopback, off on 127.0.0.1/::1; required = always; off = never (loopback only).",
    )
    max_body_mb: float = Field(
        default=8.0,
        gt=0,
        le=1024,
        description="Largest request body in MiB; a larger one gets 413 as soon as it is seen.",
    )
    max_instances: int = Field(
        default=10_000,
        ge=1,
        description="Most instances one predict or infer request may carry.",
    )
    max_json_depth: int = Field(
        default=32,
        ge=2,
        le=512,
        description="Deepest nesting of objects and arrays a request body may have.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client has to send the whole body once headers arrived (408).",
    )
    idle_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds an idle keep-alive connection (or one that never finishes its "
        "headers) stays open.",
    )
    max_connections: int = Field(
        default=2048,
        ge=1,
        description="Most open connections; a new one beyond it closes the oldest idle one (or "
        "itself, when every connection is busy).",
    )
    slo_p99_ms: float = Field(
        default=100.0,
        gt=0,
        description="Latency objective: a prediction that would queue past it is shed with "
        "503 and Retry-After instead of waiting.",
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Prediction worker threads; each model call uses one OpenMP thread.",
    )
    log_queue_size: int = Field(
        default=100_000,
        ge=1,
        description="Requests the prediction log may hold before writing; beyond it new ones "
        "are dropped and counted (keel_prediction_log_dropped_total).",
    )
    reload_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between checks for registry alias moves; a moved alias is loaded, "
        "warmed and swapped in without failing a request.",
    )
    batching: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Score concurrent predict/infer requests for one model version in one "
        "model call: auto = when measured to help (never at concurrency 1, never when it "
        "would change an output), on = always, off = never.",
    )
    max_batch: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Most rows (and requests) in one batched model call.",
    )
    max_batch_wait_ms: float = Field(
        default=1.0,
        ge=0,
        le=1000,
        description="Longest a batch waits for more requests while a thread is free; the wait "
        "also never lets the batch's estimated latency pass slo_p99_ms.",
    )
    inline_max_us: float = Field(
        default=250.0,
        ge=0,
        le=10_000,
        description="A small predict/infer request (body <= 4 KiB, no explanation, no feature "
        "lookup) arriving while no other request is in progress is scored on the event loop "
        "when its model's measured CPU time for a lone request is at most this many "
        "microseconds: cheaper than the ~65 us hand-off to a thread (Adult, 1 row: 40-70 us). "
        "0 = always a prediction thread.",
    )
    inline_explain_max_us: float = Field(
        default=2000.0,
        ge=0,
        le=10_000,
        description="An explain request (body <= 4 KiB, no feature lookup) arriving while no "
        "other request is in progress is explained on the event loop when its model's measured "
        "CPU time for one explanation is at most this many microseconds (Adult, 1 row: ~0.5 ms "
        "quiet, ~1 ms under load); a request arriving meanwhile waits that long, as it would "
        "behind the prediction thread the explanation would hold. Explanations cost several "
        "predictions, hence their own bound. 0 = always a prediction thread.",
    )
    busy_poll_us: float = Field(
        default=200.0,
        ge=0,
        le=10_000,
        description="After each answer, while no other request is in progress, the event "
        "loop polls its sockets for this many microseconds before it sleeps: a client's next "
        "request is read at once on an awake core (a lone client's median latency 0.21 -> "
        "0.14 ms on Adult). Costs at most this much CPU per answer, only when otherwise "
        "idle. 0 = sleep at once.",
    )
    log_pii: Literal["hash", "drop"] = Field(
        default="hash",
        description="Columns whose schema role is pii (or marked pii: true) in the prediction "
        "log: hash = HMAC-SHA256 hex with the project secret .keel/secret.key (equal values "
        "stay joinable), drop = left out.",
    )

    @field_validator("batching", mode="before")
    @classmethod
    def _yaml_switch(cls, value: object) -> object:
        """YAML reads a bare ``on``/``off`` as true/false: take them as meant."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    workers: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Server processes sharing the port (keel serve --workers); a supervisor "
        "restarts one that dies. At most 4 per CPU core.",
    )


class StoreConfig(Frozen):
    """Where metadata and artifacts live; ``KEEL_DB_URL`` and ``KEEL_ARTIFACTS`` override."""

    db_url: str | None = Field(
        default=None,
        description="The metadata store's SQLAlchemy URL (e.g. postgresql+psycopg://...); default "
        "SQLite in .keel/keel.db. KEEL_DB_URL overrides.",
    )
    artifacts: str | None = Field(
        default=None,
        description="The artifact store's root: a path or an fsspec URL (s3://bucket/keel); "
        "default .keel/artifacts. KEEL_ARTIFACTS overrides.",
    )


class KeelConfig(Frozen):
    """A whole keel.yaml."""

    project: str = Field(
        description="The project's name, shown by keel run and in reports.",
    )
    data: DataConfig
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    card: CardConfig = Field(default_factory=CardConfig)
    feature_views: list[FeatureViewConfig] = Field(default_factory=list)

    @field_validator("executor")
    @classmethod
    def _registered_executor(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise PydanticCustomError("unregistered", EXECUTORS.unknown(value))
        return value

    @field_validator("feature_views")
    @classmethod
    def _unique_views(cls, views: list[FeatureViewConfig]) -> list[FeatureViewConfig]:
        names = [v.name for v in views]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature view names must be unique; {dupes} repeat")
        return views

    search: SearchConfig | None = None
    schema_mode: Literal["reviewed", "auto"] = Field(
        default="reviewed",
        alias="schema",
        description="reviewed: schema.yaml is the reviewed contract; when the data's columns "
        "or types no longer match it, keel run stops with the difference (refresh it with "
        "'keel schema infer --update'). auto: keel run refreshes schema.yaml itself, keeping "
        "the edits on unchanged columns, and warns.",
    )
    automl: AutoMLConfig = Field(default_factory=AutoMLConfig)
    executor: str = Field(
        default="local",
        description="Where pipeline steps, search trials (and Ray Train fits) run: local "
        "(steps in threads within resources.cpus, trials in processes), ray, or an executor an "
        "installed plug-in registers (entry-point group keel.executors). KEEL_EXECUTOR "
        "overrides.",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster to use with executor: ray (ray://host:10001, auto); unset: a "
        "local Ray. KEEL_RAY_ADDRESS overrides.",
    )
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    retrain: RetrainConfig | None = Field(
        default=None,
        description="The retraining policy (keel monitor run NAME --retrain): on an alert of "
        "the rule it names, retrain with the labelled window and canary a version that passes "
        "its gates.",
    )

    @model_validator(mode="after")
    def _retrain_rule(self) -> KeelConfig:
        if self.retrain is not None:
            names = [rule.name for rule in self.monitor.alerts]
            if self.retrain.on not in names:
                known = ", ".join(names) or "none: add one under monitor.alerts"
                raise ValueError(
                    f"retrain.on names the alert rule {self.retrain.on!r}, which is not in "
                    f"monitor.alerts (rules: {known})"
                )
        return self

    @model_validator(mode="after")
    def _gate_metrics_of_task(self) -> KeelConfig:
        # a regression model has no accuracy, a classifier no rmse: say so before training,
        # not as a failed gate after it (only the built-in tasks' names are known here)
        other = _OTHER_TASKS_METRICS.get(self.model.task, frozenset())
        parsed = self.evaluate.parsed_gates()
        for gate, (path, _, _) in zip(self.evaluate.gates, parsed, strict=True):
            parts = path.split(".")
            name = parts[1] if parts[0] == "metrics" and len(parts) > 1 else parts[0]
            if (len(parts) == 1 or parts[0] == "metrics") and name in other:
                own = ", ".join(_TASK_METRICS[self.model.task])
                raise ValueError(
                    f"evaluate.gates: {gate!r} reads {name!r}, which a {self.model.task} "
                    f"model does not have (model.task: {self.model.task}); its metrics: {own}"
                )
        return self

    _where: dict[tuple[str | int, ...], str] = PrivateAttr(default_factory=dict)

    def where(self, *path: str | int) -> str:
        """``keel.yaml:LINE`` of a key, e.g. ``where("pipeline", "steps", 0)``."""
        return self._where.get(tuple(path), "keel.yaml")

    def resolve_path(self, root: Path, path: str) -> Path:
        """A data path from the config, relative to the project root unless absolute."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else root / candidate
