"""Model-agnostic explanations for flavors without contributions of their own (scikit-learn,
the MLP, plug-ins): ``shap``'s Permutation explainer over the model's raw output, with the
model's input columns as the players.

Needs the optional ``explain`` extra (``pip install 'keel[explain]'``: ``shap``). Why ``shap``
and not a hand-written sampler: its Permutation explainer is the reference implementation of
antithetic permutation sampling (each permutation walked forward and backward), with the
bookkeeping that skips background rows a change cannot affect; Keel supplies the game.

The game: a coalition of input columns keeps the row's own values for every model feature whose
inputs are all in the coalition (a one-hot group moves as one; a cross of two inputs needs
both) and takes the other features from each row of a background sample of training rows
saved with the model (:mod:`keel.train.background`, 100 rows); its value is the mean raw
output over the background. The raw output is log-odds for a binary classifier, the centred
log-probabilities for multiclass (softmax gives the probabilities back), the value for
regression. Every permutation walks from the empty coalition to the full one, so for every row
and output::

    base_value + sum(contributions) == raw output        (within TOLERANCE, 1e-5)

(about 1e-14 for a float64 model such as a logistic regression; up to ~1e-6 for the float32
MLP, whose outputs for a row differ in the last bits with the batch it is predicted in)

and ``base_value`` is the mean raw output over the background. The values themselves are
estimates (:data:`PERMUTATIONS` permutations, seeded per row: the same row gets the same
numbers in a batch and served); a model call per coalition per background row makes it cost
about ``2 * PERMUTATIONS * (columns + 1) * 100`` rows predicted per row explained (README:
measured cost).

Example:
    >>> ex = explain_agnostic(package, package.pipeline.transform_rows(rows))
    >>> ex.method
    'shap.Permutation'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.evaluate.explain import Explainable, Explanation

__all__ = ["PERMUTATIONS", "SEED", "TOLERANCE", "explain_agnostic", "raw_output"]

PERMUTATIONS = 10  # shap's own default ("auto": 10 forward-and-backward passes)
SEED = 0
TOLERANCE = 1e-5  # |base + sum(contributions) - raw output| in output units (float32 MLP)
_CLIP = 1e-12  # probabilities are clipped to [_CLIP, 1 - _CLIP] before the log


def _shap(flavor: str) -> Any:
    try:
        import shap
    except ImportError as exc:
        raise ConfigError(
            f"model flavor '{flavor}' has no exact contributions of its own; its "
            "model-agnostic explanations need the 'explain' extra (shap), which is not "
            "installed. Install it with: pip install 'keel[explain]'.",
            field="flavor",
        ) from exc
    return shap


def raw_output(kind: str, prediction: np.ndarray) -> np.ndarray:
    """The model's raw output for its predictions, shape ``(rows, k)``: log-odds (binary),
    centred log-probabilities (multiclass), the value (regression)."""
    p = np.asarray(prediction, dtype=np.float64)
    if kind == "binary":
        q = np.clip(p.reshape(-1), _CLIP, 1.0 - _CLIP)
        return np.asarray((np.log(q) - np.log1p(-q))[:, None])
    if kind == "multiclass":
        logs = np.log(np.clip(p, _CLIP, None))
        return np.asarray(logs - logs.mean(axis=1, keepdims=True))
    return p.reshape(-1, 1)


class _ColumnMasker:
    """shap's masker protocol over input columns: ``mask`` (one bool per input column) keeps
    the row's features whose inputs are all kept; the rest come from each background row."""

    clustering = None
    immutable_outputs = False

    def __init__(self, background: np.ndarray, sources: np.ndarray) -> None:
        self.background = background
        self.sources = sources  # (features, columns): feature j is computed from column i
        self.shape = (len(background), sources.shape[1])

    def __call__(self, mask: np.ndarray, x: np.ndarray) -> np.ndarray:
        kept = ~self.sources[:, ~mask].any(axis=1)
        out = self.background.copy()
        out[:, kept] = x.reshape(-1)[kept]
        return out

    def mask_shapes(self, x: np.ndarray) -> list[tuple[int, ...]]:
        return [(self.sources.shape[1],)]

    def invariants(self, x: np.ndarray) -> np.ndarray:
        """``(background rows, columns)``: whether a background row already equals the row on
        every feature of a column (then toggling that column cannot change its output)."""
        same = self.background == x.reshape(1, -1)
        return np.stack(
            [same[:, self.sources[:, i]].all(axis=1) for i in range(self.shape[1])], axis=1
        )


def explain_agnostic(package: Explainable, x: np.ndarray) -> Explanation:
    """Explain rows already transformed by the package's feature pipeline, model-agnostically.

    Raises:
        ConfigError: ``shap`` is not installed (names ``pip install 'keel[explain]'``), or the
            model was saved without a background sample (re-train it).
    """
    from keel.evaluate.explain import Explanation, fold_matrix, outputs_of, prediction_of
    from keel.train.tasks import task_for

    shap = _shap(package.flavor)
    background = getattr(package.model, "background_", None)
    if background is None:
        raise ConfigError(
            f"this {package.flavor} model was saved without a background sample of training "
            "rows, which model-agnostic explanations need; re-train it (keel run --no-cache) "
            "with this version of Keel.",
            field="model",
        )
    kind = task_for(package.task).kind
    outputs = outputs_of(kind, package.classes)
    columns, fold = fold_matrix(package.pipeline)
    matrix = np.asarray(x, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != fold.shape[0]:
        raise ConfigError(
            f"rows to explain have shape {matrix.shape}; the model takes {fold.shape[0]} "
            "features (transform them with the package's pipeline first).",
            field="rows",
        )

    def model(rows: np.ndarray) -> np.ndarray:
        out = raw_output(kind, package.model.predict(rows))
        return out[:, 0] if len(outputs) == 1 else out

    masker = _ColumnMasker(np.asarray(background, dtype=np.float64), fold > 0)
    explainer = shap.explainers.Permutation(model, masker, seed=SEED)
    evals = PERMUTATIONS * (2 * len(columns) + 1)
    k = len(outputs)
    contributions = np.zeros((len(matrix), k, len(columns)))
    base = np.zeros(k)
    saved = np.random.get_state()  # shap draws its permutations from NumPy's global generator
    try:
        for i in range(len(matrix)):  # shap explains one row at a time; seeded per row
            np.random.seed(SEED)
            found = explainer(matrix[i : i + 1], max_evals=evals, batch_size=evals, silent=True)
            contributions[i] = (
                np.asarray(found.values[0], dtype=np.float64).reshape(len(columns), k).T
            )
            base = np.asarray(found.base_values[0], dtype=np.float64).reshape(k)
    finally:
        np.random.set_state(saved)
    if not len(matrix):
        base = model(masker.background).reshape(len(masker.background), k).mean(axis=0)
    margin = raw_output(kind, package.model.predict(matrix)) if len(matrix) else np.zeros((0, k))
    return Explanation(
        columns, outputs, base, contributions, margin, prediction_of(kind, margin),
        "shap.Permutation",
    )  # fmt: skip
