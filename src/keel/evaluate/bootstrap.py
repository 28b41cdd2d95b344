"""Bootstrap confidence intervals for every metric, vectorised over resamples.

A resample is a row of multinomial counts (how often each test row was drawn, summing to n).
Every metric is a function of count-weighted sums, so one ``counts @ components`` product gives
a metric for a whole chunk of resamples at once; ROC AUC is the count-weighted Mann-Whitney
statistic read off a cumulative sum over rows sorted by score (ties count one half), the same
number scikit-learn's ``roc_auc_score(..., sample_weight=counts)`` gives. Slices reuse the
resamples of the whole test set (as TFMA does), and a champion scored on the same rows gets
the same counts: the paired bootstrap of :mod:`keel.evaluate.comparison`.

Example:
    >>> settings = BootstrapSettings(resamples=1000, seed=0)
    >>> (draws,) = metric_draws("binary", y, proba, [None], settings)
    >>> percentile_interval(draws["roc_auc"], 0.95)
    (0.921, 0.934)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from keel.evaluate.workshare import Runner, serially

__all__ = [
    "AUTO",
    "RESAMPLE_BLOCK",
    "Block",
    "BootstrapSettings",
    "block_count",
    "metric_draws",
    "percentile_interval",
    "resample_counts",
    "weighted_auc",
]

Draws = dict[str, np.ndarray]
Block = tuple[list[np.ndarray], list[dict[str, np.ndarray]]]  # per subset: sums, AUCs
CHUNK_CELLS = 1 << 18  # counts per chunk (int32: 1 MB)
AUTO = 0  # BootstrapSettings.chunk: sized to the rows (``CHUNK_CELLS``)
RESAMPLE_BLOCK = 64  # resamples drawn from one seed: the unit of work a thread takes


@dataclass(frozen=True)
class BootstrapSettings:
    """How to resample: ``resamples`` multinomial draws of all rows (0: no intervals), from
    ``seed``, summarised as central ``confidence`` percentile intervals. ``chunk`` resamples
    are processed at a time (``AUTO``: as many as keep a chunk's counts near 1 MB, in a core's
    cache: 16 for the Adult test set's 16,281 rows, 2.7x less CPU than 100 at a time); the
    resamples are the same whatever the chunk (a metric's float32 sums may round differently
    in the 7th digit)."""

    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    chunk: int = 100

    def chunk_for(self, n: int) -> int:
        """Resamples per chunk for ``n`` rows."""
        if self.chunk > 0:
            return self.chunk
        return max(4, min(CHUNK_CELLS // max(n, 1), 256))


def resample_counts(
    n: int,
    settings: BootstrapSettings,
    *,
    into: np.ndarray | None = None,
    blocks: Iterable[int] | None = None,
) -> Iterator[np.ndarray]:
    """``(b, n)`` int32 count matrices, at most ``settings.chunk_for(n)`` resamples at a time.

    Resamples come in blocks of ``RESAMPLE_BLOCK``, block ``i`` drawn from the seed
    ``(settings.seed, i)``: the same seed gives the same resamples whatever the chunk, and any
    block can be drawn alone, on any thread (``blocks``: which ones, default all). With
    ``into`` (an int32 buffer of at least ``(chunk, n)``), every chunk is written into it: use
    one before taking the next."""
    chunk = min(settings.chunk_for(n), RESAMPLE_BLOCK)
    for block in range(block_count(settings)) if blocks is None else blocks:
        rng = np.random.default_rng([settings.seed, block])
        size = min(RESAMPLE_BLOCK, settings.resamples - block * RESAMPLE_BLOCK)
        done = 0
        while done < size:
            b = min(chunk, size - done)
            counts = np.empty((b, n), dtype=np.int32) if into is None else into[:b, :n]
            for i in range(b):  # one resample at a time: its draws and counts stay in cache
                counts[i] = np.bincount(rng.integers(0, n, size=n, dtype=np.int32), minlength=n)
            done += b
            yield counts


def block_count(settings: BootstrapSettings) -> int:
    """How many blocks of resamples ``settings`` draws."""
    return -(-settings.resamples // RESAMPLE_BLOCK)


class _Scratch:
    """Buffers kept from chunk to chunk, one per purpose: a fresh megabyte array per operation
    cost as much CPU as the arithmetic on it (its pages are new to the cache each time)."""

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def get(
        self, purpose: str, rows: int, columns: int, dtype: npt.DTypeLike = np.int32
    ) -> np.ndarray:
        """A ``(rows, columns)`` view of the purpose's buffer (its contents are undefined)."""
        size = rows * columns
        flat = self._flat.get(purpose)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = self._flat[purpose] = np.empty(size, dtype=dtype)
        return flat[:size].reshape(rows, columns)

    def take(self, purpose: str, a: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``a[:, columns]`` into the purpose's buffer."""
        return np.take(a, columns, axis=1, out=self.get(purpose, len(a), len(columns), a.dtype))


@dataclass(frozen=True)
class _Ranked:
    """Rows sorted by score, the positives, where each positive's tie block ``[lo, hi)``
    starts, and the positives tied with other rows (``tied``, with their blocks' ends)."""

    order: np.ndarray | None  # None: the rows are already in score order
    lo: np.ndarray
    tied: np.ndarray
    tied_hi: np.ndarray
    positive: np.ndarray
    negative: np.ndarray  # int32 1 or 0 per row in score order

    @classmethod
    def of(cls, score: np.ndarray, y: np.ndarray) -> _Ranked:
        order = np.argsort(score, kind="stable")
        ranked = score[order]
        new = np.ones(len(ranked), dtype=bool)
        new[1:] = ranked[1:] != ranked[:-1]
        level = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(ranked))
        labels = y[order].astype(bool)
        positive = np.flatnonzero(labels)
        kept = None if bool(np.all(order[1:] > order[:-1])) else order
        lo, hi = starts[level][positive], ends[level][positive]
        tied = np.flatnonzero(hi - lo > 1)
        return cls(kept, lo, tied, hi[tied], positive, (~labels).astype(np.int32))


def weighted_auc(counts: np.ndarray, score: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC of 0/1 labels ``y`` against ``score`` for each row of weights ``counts``
    (``(b, n)``); NaN where a resample holds only one class."""
    return _auc(counts, _Ranked.of(score, y))


def _auc(counts: np.ndarray, ranked: _Ranked, scratch: _Scratch | None = None) -> np.ndarray:
    scratch = scratch or _Scratch()
    c = counts if ranked.order is None else scratch.take("ordered", counts, ranked.order)
    # integer counts: integer sums, exact (as float64 sums of their products are); others:
    # float64 throughout
    exact = np.issubdtype(c.dtype, np.integer)
    if not exact:
        c = c.astype(np.float64)
    wide = np.int64 if exact else np.float64
    below = _running_sums(c, ranked.negative, scratch)
    # negatives strictly below a positive's tie block, plus half of those inside it (none
    # for a positive alone in its block: only tied ones need the block's end)
    drawn = scratch.take("drawn", c, ranked.positive)
    wins = np.einsum("ij,ij->i", drawn, scratch.take("below", below, ranked.lo), dtype=wide)
    wins = wins.astype(np.float64)
    if len(ranked.tied):
        inside = below[:, ranked.tied_hi] - below[:, ranked.lo[ranked.tied]]
        wins += 0.5 * np.einsum("ij,ij->i", drawn[:, ranked.tied], inside, dtype=wide)
    pairs = drawn.sum(axis=1, dtype=wide).astype(np.float64) * below[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def _running_sums(a: np.ndarray, mask: np.ndarray, scratch: _Scratch) -> np.ndarray:
    """``(b, n + 1)``: 0, then each row's running sum of ``a * mask`` in ``a``'s type, in the
    scratch's ``running`` buffer. Integer running sums are ~8x cheaper than float ones (an
    integer addition waits one cycle for the previous one, a float addition four): 0.007 s
    for the 16 million counts of 1,000 resamples of the Adult test set, against 0.05 s in
    float32."""
    b, n = a.shape
    out = scratch.get("running", b, n + 1, a.dtype)
    out[:, 0] = 0
    np.multiply(a, mask, out=out[:, 1:])
    np.cumsum(out[:, 1:], axis=1, out=out[:, 1:])
    return out


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """``top / bottom``, 0 where ``bottom`` is 0 (scikit-learn's ``zero_division=0``)."""
    return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), 0.0)


def _binary(y: np.ndarray, proba: np.ndarray, threshold: float) -> _Plan:
    p = np.asarray(proba, dtype=np.float64)
    truth = y.astype(np.float64)
    predicted = (p >= threshold).astype(np.float64)
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    loss = -(truth * np.log(clipped) + (1 - truth) * np.log(1 - clipped))
    parts = np.column_stack(
        [np.ones_like(truth), truth, predicted, truth * predicted, loss, (p - truth) ** 2]
    ).astype(np.float32)  # sums for intervals: float32 is ample and halves the work

    def metrics(s: np.ndarray) -> Draws:
        n, pos, pred, hit = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
        return {
            "accuracy": _ratio(n - pos - pred + 2 * hit, n),
            "log_loss": _ratio(s[:, 4], n),
            "precision": _ratio(hit, pred),
            "recall": _ratio(hit, pos),
            "positive_rate": _ratio(pred, n),
            "base_rate": _ratio(pos, n),
            "brier": _ratio(s[:, 5], n),
        }

    return _Plan(parts, metrics, {"roc_auc": (p, y.astype(np.int64))})


def _multiclass(y: np.ndarray, proba: np.ndarray) -> _Plan:
    k = proba.shape[1]
    codes = y.astype(np.int64)
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    predicted = np.argmax(proba, axis=1)
    truth = np.eye(k)[codes]
    chosen = np.eye(k)[predicted]
    loss = -np.log(clipped[np.arange(len(codes)), codes])
    ones = np.ones(len(codes))
    parts = np.column_stack(
        [ones, (predicted == codes).astype(np.float64), loss, truth, chosen, truth * chosen]
    ).astype(np.float32)

    def metrics(s: np.ndarray) -> Draws:
        n = s[:, 0]
        true_k, pred_k, hit_k = s[:, 3 : 3 + k], s[:, 3 + k : 3 + 2 * k], s[:, 3 + 2 * k :]
        # averaged over the classes a draw holds or predicts, as multiclass_metrics does
        present = (true_k + pred_k) > 0
        f1 = _ratio(2 * hit_k, true_k + pred_k)
        return {
            "accuracy": _ratio(s[:, 1], n),
            "log_loss": _ratio(s[:, 2], n),
            "macro_f1": _ratio(f1.sum(axis=1), present.sum(axis=1)),
        }

    scores = {f"auc_{c}": (clipped[:, c], (codes == c).astype(np.int64)) for c in range(k)}
    return _Plan(parts, metrics, scores, macro_auc=k)


def _regression(y: np.ndarray, prediction: np.ndarray) -> _Plan:
    truth = y.astype(np.float64)
    guess = np.asarray(prediction, dtype=np.float64)
    error = guess - truth
    # float64: R2's spread is a difference of large sums
    parts = np.column_stack([np.ones_like(truth), error**2, np.abs(error), truth, truth**2, guess])

    def metrics(s: np.ndarray) -> Draws:
        n = s[:, 0]
        spread = s[:, 4] - _ratio(s[:, 3] ** 2, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(spread > 1e-12 * np.maximum(s[:, 4], 1.0), 1 - s[:, 1] / spread, np.nan)
        return {
            "rmse": np.sqrt(_ratio(s[:, 1], n)),
            "mae": _ratio(s[:, 2], n),
            "r2": r2,
            "mean_prediction": _ratio(s[:, 5], n),
        }

    return _Plan(parts, metrics, {})


@dataclass(frozen=True)
class _Plan:
    """Per-row components whose count-weighted sums give the metrics, plus AUC scores."""

    parts: np.ndarray
    metrics: Callable[[np.ndarray], Draws]
    scores: dict[str, tuple[np.ndarray, np.ndarray]]
    macro_auc: int = 0


def _plan(kind: str, y: np.ndarray, prediction: np.ndarray, threshold: float) -> _Plan:
    if kind == "binary":
        return _binary(y, prediction, threshold)
    if kind == "multiclass":
        return _multiclass(y, prediction)
    return _regression(y, prediction)


def metric_draws(
    kind: str,
    y: np.ndarray,
    prediction: np.ndarray,
    subsets: Sequence[np.ndarray | None],
    settings: BootstrapSettings,
    *,
    threshold: float = 0.5,
    order: np.ndarray | None = None,
    run: Runner[Block] = serially,
) -> list[Draws]:
    """Each metric's value on every resample, for each subset of rows (None: all rows).

    Args:
        kind: The task's kind: ``binary`` (P(positive)), ``multiclass`` (``(rows, k)``
            probabilities) or ``regression`` (values).
        y: Encoded labels (0/1, class codes) or target values.
        prediction: The model's raw predictions for every row.
        subsets: Row indices of each subset (a slice), None for the whole set.
        settings: Resamples, seed and chunk size.
        threshold: The decision threshold of a binary model.
        order: Which row each column of the resample counts belongs to (a permutation); the
            default puts a binary model's rows in score order, which spares its overall AUC a
            gather per resample. Pass the same order to pair two models' draws.
        run: Runs the blocks of resamples (:data:`keel.evaluate.workshare.Runner`; default
            one after the other here): e.g. ``Workshare.map`` to share them between threads.

    Returns:
        Per subset, metric name -> ``(resamples,)`` array (NaN where undefined, e.g. AUC on a
        resample with one class).
    """
    if order is None:
        order = np.argsort(prediction, kind="stable") if kind == "binary" else np.arange(len(y))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    # work in the rows' resample positions: row order[j] is drawn count[:, j] times
    y, prediction = y[order], prediction[order]
    subsets = [None if rows is None else position[rows] for rows in subsets]
    if kind == "binary":  # each slice's rows in score order too: one gather per slice
        subsets = [None if r is None else r[np.argsort(prediction[r], kind="stable")]
                   for r in subsets]  # fmt: skip
    plans = [
        (rows, _plan(kind, y if rows is None else y[rows],
                     prediction if rows is None else prediction[rows], threshold))
        for rows in subsets
    ]  # fmt: skip
    ranked = [{name: _Ranked.of(s, t) for name, (s, t) in plan.scores.items()} for _, plan in plans]
    local = threading.local()  # each thread's scratch buffers

    def block(index: int) -> Block:
        """Per plan, the block's weighted sums and AUCs."""
        scratch = local.__dict__.setdefault("scratch", _Scratch())
        chunk = min(settings.chunk_for(len(y)), settings.resamples, RESAMPLE_BLOCK)
        sums: list[list[np.ndarray]] = [[] for _ in plans]
        aucs: list[list[dict[str, np.ndarray]]] = [[] for _ in plans]
        into = scratch.get("counts", chunk, len(y))
        for counts in resample_counts(len(y), settings, into=into, blocks=(index,)):
            for i, (rows, plan) in enumerate(plans):
                c = counts if rows is None else scratch.take("subset", counts, rows)
                weights = scratch.get("weights", len(c), c.shape[1], plan.parts.dtype)
                np.copyto(weights, c)  # a BLAS product needs both sides in one float type
                sums[i].append(weights @ plan.parts)
                aucs[i].append({name: _auc(c, r, scratch) for name, r in ranked[i].items()})
        return [np.concatenate(s) for s in sums], [
            {name: np.concatenate([f[name] for f in found]) for name in found[0]} if found else {}
            for found in aucs
        ]

    blocks = run([partial(block, index) for index in range(block_count(settings))])
    out: list[Draws] = []
    for i, (_, plan) in enumerate(plans):
        if not blocks:
            out.append({})
            continue
        # once, every resample
        draws = plan.metrics(np.concatenate([s[i] for s, _ in blocks]).astype(np.float64))
        auc = {name: np.concatenate([a[i][name] for _, a in blocks]) for name in blocks[0][1][i]}
        if plan.macro_auc:
            draws["roc_auc"] = np.mean(np.column_stack(list(auc.values())), axis=1)
        else:
            draws |= auc
        out.append(draws)
    return out


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The central ``confidence`` percentile interval of finite draws; None when fewer than
    half the resamples define the metric (e.g. AUC of a slice that is nearly one class)."""
    finite = draws[np.isfinite(draws)]
    if len(finite) == 0 or len(finite) < 0.5 * len(draws):
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)
