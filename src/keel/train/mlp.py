"""PyTorch tabular MLP (extra ``torch``): seeded CPU training, early stopping on validation loss.

Saved as safe files: the state dict in safetensors, the architecture as JSON and a background
sample of training rows as ``.npy`` (:mod:`keel.train.background`); loading
builds the network from the JSON and fills it from the tensors, no pickle. Regression targets are
standardised for training and scaled back in :meth:`MLPTrainer.predict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
import orjson

from keel.errors import ConfigError, NotFittedError
from keel.train.background import background_files, read_background, sample_background
from keel.train.base import (
    HISTORY_METRICS,
    OnIteration,
    TrainerBase,
    check_task,
    merge_weights,
    n_classes_of,
    score,
    unknown_param,
)

__all__ = ["MLPTrainer"]

MODEL_FILE = "model.safetensors"
ARCHITECTURE_FILE = "mlp.json"

_DEFAULTS: dict[str, Any] = {
    "hidden": [64, 32],
    "dropout": 0.1,
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 256,
    "epochs": 50,
    "class_weight": None,
}


class MLPTrainer(TrainerBase):
    """A feed-forward network (Linear -> ReLU -> Dropout per hidden layer) trained with Adam.

    ``params``: ``hidden`` (layer sizes), ``dropout``, ``learning_rate``, ``weight_decay``,
    ``batch_size``, ``epochs`` (maximum), ``class_weight: balanced``. One iteration is one epoch;
    early stopping keeps the epoch with the lowest validation loss.
    """

    flavor: ClassVar[str] = "mlp"
    model_file: ClassVar[str] = MODEL_FILE

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        x_valid: np.ndarray | None = None,
        y_valid: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        early_stopping_rounds: int | None = None,
        on_iteration: OnIteration | None = None,
    ) -> Self:
        """Train for up to ``epochs`` epochs; keep the best epoch when stopping early."""
        import torch

        task = check_task(self.task)
        params = _check(self.params)
        k = n_classes_of(task, y, y_valid)
        target = y.astype(np.float64)
        mean, std = (
            (float(target.mean()), float(target.std() or 1.0))
            if task == "regression"
            else (0.0, 1.0)
        )
        self.architecture_ = {
            "task": task,
            "inputs": int(x.shape[1]),
            "hidden": [int(h) for h in params["hidden"]],
            "dropout": float(params["dropout"]),
            "outputs": k if task == "multiclass" else 1,
            "target_mean": mean,
            "target_std": std,
        }
        weights = merge_weights(sample_weight, params["class_weight"], y, task, k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.network_ = _network(self.architecture_)
            self._train(
                x,
                (target - mean) / std,
                weights,
                params,
                x_valid,
                y_valid,
                early_stopping_rounds,
                on_iteration,
            )
        self.n_classes_ = k
        self.background_: np.ndarray | None = sample_background(x, self.seed)  # explanations
        self.facts_ = {
            "train_rows": len(y),
            "validation_rows": 0 if y_valid is None else len(y_valid),
            "epochs": len(next(iter(self.history_.values()), [])) or int(params["epochs"]),
            "torch_version": torch.__version__,
        }
        return self

    def _train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None,
        params: Mapping[str, Any],
        x_valid: np.ndarray | None,
        y_valid: np.ndarray | None,
        patience: int | None,
        on_iteration: OnIteration | None,
    ) -> None:
        import torch

        network, task = self.network_, self.task
        features = torch.as_tensor(x, dtype=torch.float32)
        labels = torch.as_tensor(y, dtype=torch.long if task == "multiclass" else torch.float32)
        row_weights = torch.as_tensor(
            np.ones(len(y)) if weights is None else weights, dtype=torch.float32
        )
        optimizer = torch.optim.Adam(
            network.parameters(), lr=params["learning_rate"], weight_decay=params["weight_decay"]
        )
        order = torch.Generator().manual_seed(self.seed)
        batch = int(params["batch_size"])
        best_loss, best_state, best_epoch, waited = float("inf"), None, 0, 0
        for epoch in range(1, int(params["epochs"]) + 1):
            network.train()
            for index in torch.split(torch.randperm(len(labels), generator=order), batch):
                optimizer.zero_grad()
                out = network(features[index])
                loss = (_loss(task, out, labels[index]) * row_weights[index]).mean()
                loss.backward()
                optimizer.step()
            if x_valid is None or y_valid is None:
                if on_iteration is not None:
                    on_iteration(epoch, {})
                continue
            metrics = score(task, y_valid, self.predict(x_valid))
            for name, value in metrics.items():
                self.history_.setdefault(name, []).append(value)
            if on_iteration is not None:
                on_iteration(epoch, metrics)
            current = metrics[HISTORY_METRICS[task][0]]
            if current < best_loss:
                best_loss, best_epoch, waited = current, epoch, 0
                best_state = {n: t.detach().clone() for n, t in network.state_dict().items()}
            else:
                waited += 1
                if patience and waited >= patience:
                    break
        if best_state is not None and patience:
            network.load_state_dict(best_state)
            self.best_iteration_ = best_epoch
        network.eval()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(positive), class probabilities (n, k), or values, by task."""
        import torch

        network = getattr(self, "network_", None)
        if network is None:
            raise NotFittedError("this MLP trainer is not fitted; call fit() or load().")
        was_training = network.training
        network.eval()
        with torch.no_grad():
            out = network(torch.as_tensor(x, dtype=torch.float32)).double()
        network.train(was_training)
        arch = self.architecture_
        if arch["task"] == "binary":
            return np.asarray(torch.sigmoid(out[:, 0]).numpy(), dtype=np.float64)
        if arch["task"] == "multiclass":
            return np.asarray(torch.softmax(out, dim=1).numpy(), dtype=np.float64)
        values = out[:, 0].numpy() * arch["target_std"] + arch["target_mean"]
        return np.asarray(values, dtype=np.float64)

    def save(self) -> dict[str, bytes]:
        """``model.safetensors`` (the state dict) and ``mlp.json`` (the architecture)."""
        from safetensors.torch import save

        network = getattr(self, "network_", None)
        if network is None:
            raise NotFittedError("this MLP trainer is not fitted; nothing to save.")
        state = {name: t.detach().contiguous() for name, t in network.state_dict().items()}
        return {
            MODEL_FILE: bytes(save(state)),
            ARCHITECTURE_FILE: orjson.dumps(self.architecture_, option=orjson.OPT_SORT_KEYS),
            **background_files(getattr(self, "background_", None)),
        }

    @classmethod
    def load(cls, files: Mapping[str, bytes]) -> Self:
        """Build the network from ``mlp.json`` and fill it from ``model.safetensors``."""
        from safetensors.torch import load

        architecture = orjson.loads(files[ARCHITECTURE_FILE])
        trainer = cls(task=str(architecture["task"]), params={}, seed=0)
        trainer.architecture_ = architecture
        network = _network(architecture)
        network.load_state_dict(load(files[MODEL_FILE]), strict=True)
        network.eval()
        trainer.network_ = network
        trainer.background_ = read_background(files)
        outputs = int(architecture["outputs"])
        trainer.n_classes_ = outputs if trainer.task == "multiclass" else n_classes_of(trainer.task)
        return trainer


def _check(params: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(_DEFAULTS)
    for name, value in params.items():
        if name not in _DEFAULTS:
            raise unknown_param("mlp", name, list(_DEFAULTS))
        out[name] = value
    hidden = out["hidden"]
    if not isinstance(hidden, list | tuple) or not all(
        isinstance(h, int) and h > 0 for h in hidden
    ):
        raise ConfigError(
            f"model.params.hidden must be a list of positive layer sizes, e.g. [64, 32]; got "
            f"{hidden!r}.",
            field="model.params.hidden",
        )
    for name in ("learning_rate", "batch_size", "epochs"):
        if not isinstance(out[name], int | float) or out[name] <= 0:
            raise ConfigError(
                f"model.params.{name} must be a positive number; got {out[name]!r}.",
                field=f"model.params.{name}",
            )
    if not 0.0 <= float(out["dropout"]) < 1.0:
        raise ConfigError(
            f"model.params.dropout must be in [0, 1); got {out['dropout']!r}.",
            field="model.params.dropout",
        )
    return out


def _network(architecture: Mapping[str, Any]) -> Any:
    import torch

    layers: list[Any] = []
    width = int(architecture["inputs"])
    for size in architecture["hidden"]:
        layers += [torch.nn.Linear(width, int(size)), torch.nn.ReLU()]
        if architecture["dropout"]:
            layers.append(torch.nn.Dropout(float(architecture["dropout"])))
        width = int(size)
    layers.append(torch.nn.Linear(width, int(architecture["outputs"])))
    return torch.nn.Sequential(*layers)


def _loss(task: str, out: Any, target: Any) -> Any:
    import torch.nn.functional as functional

    if task == "binary":
        return functional.binary_cross_entropy_with_logits(out[:, 0], target, reduction="none")
    if task == "multiclass":
        return functional.cross_entropy(out, target, reduction="none")
    return functional.mse_loss(out[:, 0], target, reduction="none")
