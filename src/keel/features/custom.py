"""Custom features: plain typed Python functions marked ``@keel.feature``.

A custom feature is referenced by import path in keel.yaml::

    features:
      custom:
        - function: mypkg.feats:age_bucket   # module:function
          inputs: [age]
          output: age_bucket
          type: float

and recorded in the fitted pipeline with the sha256 of its normalised source (comments and
blank lines removed). Loading the pipeline where the function's source differs raises
:class:`~keel.errors.IntegrityError` naming the function, so a server never runs a model with
feature code it was not trained with.

The function is called once per row with the row's input values: numbers as ``float`` (NaN
when missing), strings as ``str`` or None. The batch path maps it over the columns with
``np.vectorize`` (still one call per row). Mark an array-aware function
``@keel.feature(vectorized=True)``: it is then called once with whole columns (float64 arrays,
object arrays for strings) and must return one value per row; the row path calls it with
one-element arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import sys
import tokenize
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
import pyarrow as pa

from keel.errors import ConfigError, DataValidationError, IntegrityError, NotFoundError

__all__ = ["CustomFeature", "feature", "importable_from", "source_sha256"]

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "__keel_feature__"
OUTPUT_KINDS = {"float": "number", "int": "number", "string": "category", "bool": "category"}


@overload
def feature(fn: F, /) -> F: ...
@overload
def feature(*, vectorized: bool = False) -> Callable[[F], F]: ...
def feature(fn: F | None = None, /, *, vectorized: bool = False) -> F | Callable[[F], F]:
    """Mark a plain typed function as a Keel custom feature (returns it unchanged).

    Args:
        fn: The function (when used as ``@keel.feature`` without parentheses).
        vectorized: The function takes whole columns (NumPy arrays) and returns an array.

    Example:
        >>> @keel.feature
        ... def age_bucket(age: float) -> float:
        ...     return min(age // 10, 8.0)
    """

    def mark(f: F) -> F:
        setattr(f, _MARK, {"vectorized": vectorized})
        return f

    return mark(fn) if fn is not None else mark


def source_sha256(fn: Callable[..., Any]) -> str:
    """sha256 of a function's source without comments, blank lines or indentation changes."""
    source = inspect.getsource(fn)
    skipped = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    tokens = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type not in skipped
    ]
    return hashlib.sha256(" ".join(tokens).encode()).hexdigest()


@contextlib.contextmanager
def importable_from(directory: Path) -> Iterator[None]:
    """``directory`` on ``sys.path`` for the block (custom feature modules kept in a project)."""
    root = str(directory)
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        yield
    finally:
        if added and root in sys.path:
            sys.path.remove(root)


def _import(name: str) -> Any:
    """Import a module; failing that, with the working directory on sys.path (``keel serve``
    run from the project directory finds the project's feature modules)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        with importable_from(Path.cwd()):
            return importlib.import_module(name)


def resolve(path: str, output: str) -> Callable[..., Any]:
    """Import ``module:function`` and check it is marked ``@keel.feature``."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ConfigError(
            f"custom feature '{output}': function '{path}' must be 'module:function', e.g. "
            "'mypkg.feats:age_bucket'.",
            field="function",
        )
    try:
        module = _import(module_name)
    except ImportError as exc:
        raise NotFoundError(
            f"custom feature '{output}': cannot import module '{module_name}' ({exc}). Make it "
            "importable where the model runs: install your package, or put its directory on "
            "PYTHONPATH.",
            field="function",
        ) from exc
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        raise NotFoundError(
            f"custom feature '{output}': module '{module_name}' has no function '{name}'.",
            field="function",
        )
    if not hasattr(fn, _MARK):
        raise ConfigError(
            f"custom feature '{output}': {path} is not marked as a feature; decorate it with "
            "@keel.feature.",
            field="function",
        )
    return fn  # type: ignore[no-any-return]


@dataclass
class CustomFeature:
    """A resolved custom feature: its function, inputs, output name and type, source hash."""

    function: str
    inputs: list[str]
    output: str
    type: str
    fn: Callable[..., Any]
    sha256: str
    vectorized: bool

    @classmethod
    def create(cls, spec: Mapping[str, Any]) -> CustomFeature:
        """Resolve ``{function, inputs, output, type}`` from keel.yaml and hash the source."""
        kind = spec.get("type", "float")
        if kind not in OUTPUT_KINDS:
            raise ConfigError(
                f"custom feature '{spec['output']}': type '{kind}' is not one of "
                f"{', '.join(OUTPUT_KINDS)}.",
                field="type",
            )
        fn = resolve(spec["function"], spec["output"])
        params = inspect.signature(fn).parameters
        if len(params) != len(spec["inputs"]):
            raise ConfigError(
                f"custom feature '{spec['output']}': {spec['function']} takes {len(params)} "
                f"arguments but inputs lists {len(spec['inputs'])} ({spec['inputs']}).",
                field="inputs",
            )
        return cls(
            function=spec["function"],
            inputs=list(spec["inputs"]),
            output=spec["output"],
            type=kind,
            fn=fn,
            sha256=source_sha256(fn),
            vectorized=bool(getattr(fn, _MARK)["vectorized"]),
        )

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CustomFeature:
        """Re-resolve a recorded feature; refuse when its source changed since training.

        Raises:
            IntegrityError: The deployed function's source hash differs from the trained one.
        """
        feature = cls.create(state)
        if feature.sha256 != state["sha256"]:
            raise IntegrityError(
                f"custom feature function {state['function']} (output '{state['output']}') "
                f"changed since the model was trained: source sha256 {feature.sha256[:12]} "
                f"deployed, {state['sha256'][:12]} trained. Retrain the model with the new "
                "code ('keel run'), or deploy the function as it was when trained.",
                field=state["function"],
                details={"trained": state["sha256"], "deployed": feature.sha256},
            )
        return feature

    def state(self) -> dict[str, Any]:
        """What the pipeline state records about this feature."""
        return {
            "function": self.function,
            "inputs": self.inputs,
            "output": self.output,
            "type": self.type,
            "sha256": self.sha256,
        }

    @property
    def kind(self) -> str:
        """The kind of value it outputs: ``number`` or ``category``."""
        return OUTPUT_KINDS[self.type]

    def _coerce(self, result: Any) -> Any:
        if self.kind == "number":
            if result is None:
                return np.nan
            if isinstance(result, bool) or not isinstance(result, int | float | np.number):
                raise self._bad_output(result)
            return float(result)
        if result is None:
            return None
        if isinstance(result, bool | np.bool_):
            return "true" if result else "false"
        if not isinstance(result, str):
            raise self._bad_output(result)
        return result

    def _bad_output(self, result: Any) -> DataValidationError:
        return DataValidationError(
            f"custom feature {self.function} returned {type(result).__name__} {result!r}; "
            f"its type is {self.type}. Fix the function or the type in keel.yaml.",
            field=self.output,
        )

    def value(self, args: Sequence[Any]) -> Any:
        """Row path: the feature for one row's input values."""
        if not self.vectorized:
            return self._coerce(self.fn(*args))
        columns = [np.array([a], dtype=np.float64 if type(a) is float else object) for a in args]
        result = self._finish(self.fn(*columns), 1)
        return result[0] if isinstance(result, np.ndarray) else result[0].as_py()

    def column(self, columns: Sequence[Any], n: int) -> Any:
        """Batch path: the feature for every row (float64 array, or an Arrow string array)."""
        if self.vectorized:
            return self._finish(self.fn(*[_vector(c) for c in columns]), n)
        otype = np.float64 if self.kind == "number" else object
        mapped = np.vectorize(lambda *a: self._coerce(self.fn(*a)), otypes=[otype])
        result = mapped(*[_objects(c) for c in columns]) if n else np.array([], dtype=otype)
        if self.kind == "number":
            return np.asarray(result, dtype=np.float64)
        return pa.array(list(result), type=pa.string())

    def _finish(self, raw: Any, n: int) -> Any:
        """An array-aware function's result as a column, checked for length and type."""
        result = np.asarray(raw)
        if result.shape != (n,):
            raise DataValidationError(
                f"custom feature {self.function} returned shape {result.shape} for {n} rows; "
                f"an array-aware feature returns one value per row.",
                field=self.output,
            )
        if self.kind == "number":
            try:
                return result.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise self._bad_output(result[0]) from exc
        return pa.array([self._coerce(_item(v)) for v in result], type=pa.string())


def _vector(column: Any) -> np.ndarray:
    """A batch column as an array-aware function takes it: float64, or objects for strings."""
    return column if isinstance(column, np.ndarray) else _objects(column)


def _objects(column: Any) -> np.ndarray:
    """A batch column as an object array of the row path's Python values."""
    if isinstance(column, np.ndarray):
        return column.astype(object)
    out = np.empty(len(column), dtype=object)
    out[:] = column.to_pylist()
    return out


def _item(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
