"""Open Inference Protocol v2 (KServe, Triton, Seldon MLServer): tensors in, tensors out.

A request names one input tensor per model input, each a column of the batch::

    {"id": "42",
     "inputs": [{"name": "age", "datatype": "INT64", "shape": [2], "data": [39, 52]},
                {"name": "sex", "datatype": "BYTES", "shape": [2], "data": ["Male", "Female"]}]}

:func:`rows_of` turns the columns into the instances the simple API takes (the same coercion
and feature pipeline then run, so both APIs answer bit for bit alike) and :func:`answer_of`
turns the answer into one output tensor per signature output (``prediction``, ``probability``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from keel.errors import DataValidationError

__all__ = [
    "DATATYPES",
    "BadTensor",
    "answer_of",
    "error_body",
    "model_metadata",
    "output_tensors",
    "rows_of",
    "warnings_of",
]

_INSTANCE = re.compile(r"instances\[(\d+)\]\.(.+)")
DATATYPES = {"int": "INT64", "float": "FP64", "string": "BYTES", "bool": "BOOL"}
_KNOWN = {
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
}
_TEXT = {str, type(None)}  # what a BYTES tensor's values may be
_KINDS = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list"}
EXAMPLE = '{"inputs": [{"name": "age", "datatype": "INT64", "shape": [1], "data": [39]}, ...]}'


class BadTensor(DataValidationError):
    """A ``BYTES`` tensor holding numbers, or an output the model lacks: a malformed inference
    request, answered 400 as KServe answers it."""

    http_status = 400


def rows_of(
    request: Any, max_instances: int, outputs: Sequence[Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The instances of an inference request (one dict per row).

    Args:
        request: The parsed request body.
        max_instances: The most rows a request may carry.
        outputs: The model signature's outputs: the request's ``outputs`` must name only
            these (None: not checked).

    Raises:
        DataValidationError: Not an inference request, a malformed tensor (naming it), tensors
            of different lengths, or more than ``max_instances`` rows.
        BadTensor: A ``BYTES`` tensor holds a value that is not a string (a number), or
            ``outputs`` names an output the model does not have.
    """
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise DataValidationError(
            f'an inference request needs "inputs": a list of tensors, e.g. {EXAMPLE}.',
            field="inputs",
        )
    columns: dict[str, list[Any]] = {}
    for index, tensor in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise DataValidationError(f'{where} must be a tensor with a "name".', field=where)
        name = tensor["name"]
        where = f"inputs[{index}] ({name})"
        datatype, shape, data = tensor.get("datatype"), tensor.get("shape"), tensor.get("data")
        if datatype not in _KNOWN:
            raise DataValidationError(
                f"{where}: datatype {datatype!r} is not an Open Inference Protocol type; "
                "use INT64, FP64, BYTES or BOOL.",
                field=f"inputs[{index}].datatype",
            )
        if not isinstance(data, list):
            raise DataValidationError(f'{where}: "data" must be a list.', field=where)
        data = _flat(data, where)
        rows = _rows(shape, where)
        if rows != len(data):
            raise DataValidationError(
                f'{where}: shape {shape} says {rows} values but "data" has {len(data)}.',
                field=f"inputs[{index}].shape",
            )
        if name in columns:
            raise DataValidationError(f"{where}: input named twice.", field=where)
        _check_values(name, datatype, data)
        columns[name] = data
    if outputs is not None:
        _check_outputs(request.get("outputs"), outputs)
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise DataValidationError(
            f"input tensors have different lengths ({sorted(lengths)}); each is one column of "
            "the same batch.",
            field="inputs",
        )
    count = lengths.pop()
    if count == 0 or count > max_instances:
        raise DataValidationError(
            f"an inference request carries 1 to {max_instances} rows; got {count}.",
            field="inputs",
        )
    names = list(columns)
    return [{name: columns[name][row] for name in names} for row in range(count)]


def error_body(
    body: dict[str, Any], inputs: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """An error answer in the request's terms: ``instances[3].age`` -> ``inputs[age].data[3]``;
    a missing field is a missing tensor, said with the tensors the model expects (``inputs``:
    the signature's inputs)."""
    field = body.get("field")
    if isinstance(field, str):
        match = _INSTANCE.match(field)
        details = body.get("details")
        missing = details.get("missing") if isinstance(details, dict) else None
        if match is not None and isinstance(missing, list) and inputs is not None:
            return dict(body, message=_missing_message(missing, inputs), field="inputs")
        if match is not None:
            row, name = match.groups()
            where = f"inputs[{name}].data[{row}]"
            message = body.get("message")
            if isinstance(message, str):
                body = dict(body, message=message.replace(field, where, 1))
            body = dict(body, field=where)
    return body


def _missing_message(missing: list[Any], inputs: Sequence[Mapping[str, Any]]) -> str:
    """No tensor is named after these model inputs: which, and the tensors the model takes."""
    absent = ", ".join(f"'{name}'" for name in missing)
    what = f"input tensor {absent} is" if len(missing) == 1 else f"input tensors {absent} are"
    expected = ", ".join(
        f"{spec['name']} ({DATATYPES.get(spec['type'], 'BYTES')})" for spec in inputs
    )
    return (
        f"inputs: {what} missing. The model takes one tensor per input: {expected} "
        "(null elements for missing values)."
    )


def warnings_of(findings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scoring warnings (``Finding.to_dict()``) in the request's terms, as :func:`error_body`
    words errors: a value of element 0 of tensor ``timestamp`` is ``inputs[timestamp].data[0]``
    in ``field`` and ``message``, never ``instances[0].timestamp`` (an OIP request has no
    instances)."""
    return [error_body(finding) for finding in findings]


def _check_values(name: str, datatype: str, data: list[Any]) -> None:
    """Refuse a ``BYTES`` tensor's first value that is not a string (null is missing), as
    KServe does: a number there says the client mistook the input's type. (A value of a
    number or BOOL tensor that is not one is the coercion's to name: 422, as on the simple
    API.)"""
    if datatype != "BYTES" or set(map(type, data)) <= _TEXT:  # one pass in C, not per value
        return
    row, value = next((i, v) for i, v in enumerate(data) if type(v) is not str and v is not None)
    held = _KINDS.get(type(value), "an object")
    fix = "send it as a string"
    if isinstance(value, int | float) and not isinstance(value, bool):
        fix = f'declare the tensor INT64 or FP64, or send the value as a string ("{value}")'
    raise BadTensor(
        f"inputs[{name}].data[{row}]: {value!r} ({held}) in tensor '{name}' of datatype "
        f"BYTES, which holds strings only: {fix}.",
        field=f"inputs[{name}].data[{row}]",
        details={"tensor": name, "datatype": datatype, "value": value},
    )


def _check_outputs(requested: Any, outputs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a requested output the model does not have (the OIP ``outputs`` list)."""
    if requested is None:
        return
    names = [str(output["name"]) for output in outputs]
    if not isinstance(requested, list):
        raise BadTensor(
            f'"outputs" must be a list of {{"name": ...}}; this model\'s outputs: '
            f"{', '.join(names)}.",
            field="outputs",
        )
    for index, item in enumerate(requested):
        name = item.get("name") if isinstance(item, dict) else None
        if name not in names:
            raise BadTensor(
                f"outputs[{index}]: the model has no output {name!r}; its outputs: "
                f'{", ".join(names)}. Name one of them, or leave "outputs" out for all.',
                field=f"outputs[{index}]",
                details={"outputs": names},
            )


def _flat(data: list[Any], where: str) -> list[Any]:
    if data and isinstance(data[0], list):  # row-major nested form, [[v], [v], ...]
        flat: list[Any] = []
        for item in data:
            if not isinstance(item, list) or len(item) != 1:
                raise DataValidationError(
                    f'{where}: nested "data" must hold one value per row.', field=where
                )
            flat.append(item[0])
        return flat
    return data


def _rows(shape: Any, where: str) -> int:
    ok = (
        isinstance(shape, list)
        and shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    )
    if not ok or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise DataValidationError(
            f"{where}: shape {shape!r} must be [rows] or [rows, 1] (one column per input).",
            field=where,
        )
    return int(shape[0])


def answer_of(
    outputs: Sequence[dict[str, Any]], labels: list[Any], probabilities: list[Any] | None
) -> list[dict[str, Any]]:
    """Output tensors of a prediction, in the signature's order."""
    tensors = []
    for spec, values in zip(output_tensors(outputs), (labels, probabilities), strict=False):
        if values is None:
            continue
        data = values
        if len(spec["shape"]) == 2:  # per-class probabilities, flattened row-major
            data = [p for row in values for p in row]
            shape = [len(values), spec["shape"][1]]
        else:
            shape = [len(values)]
        tensors.append(
            {"name": spec["name"], "datatype": spec["datatype"], "shape": shape, "data": data}
        )
    return tensors


def output_tensors(outputs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open Inference Protocol output tensors of a signature's outputs (any task)."""
    tensors = []
    for output in outputs:
        if output["type"] == "float[]":  # one probability per class
            shape = [-1, len(output.get("classes", []))]
            tensors.append({"name": output["name"], "datatype": "FP64", "shape": shape})
        else:
            datatype = DATATYPES.get(output["type"], "BYTES")
            tensors.append({"name": output["name"], "datatype": datatype, "shape": [-1]})
        if "of" in output:  # a binary classifier's probability: P(this class)
            tensors[-1]["parameters"] = {"of": output["of"]}
    return tensors


def model_metadata(
    name: str, version: str, package: Any, views: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The model metadata response (``GET /v2/models/{name}``).

    For a model trained with feature views (``views``: what
    :func:`keel.features.store.training_views` found, loaded once per served version), the
    inputs say what a client sends: each view feature carries ``"filled_by": "view:NAME"`` and
    ``"optional": true`` (the server fills it from the online store when left out), and each
    entity key carries ``"entity_key": "view:NAME"`` (comma-separated when several views share
    it), listed as an input of its own when the model does not read it. OIP ``parameters``
    hold only strings, numbers and booleans. Without views the answer is as it always was. A
    date or timestamp input is ``BYTES`` (ISO 8601 text); one read from unix times says its
    ``unit`` (``s``, ``ms``, ``us``): it takes those numbers too.
    """
    signature = package.signature
    inputs = [
        {
            "name": i["name"],
            "datatype": DATATYPES.get(i["type"], "BYTES"),  # dates: ISO 8601 text
            "shape": [-1],
            "parameters": {"type": i["type"], "nullable": i["nullable"]},
        }
        for i in signature["inputs"]
    ]
    for tensor in inputs:  # a timestamp read from unix times takes those numbers too
        if tensor["parameters"]["type"] == "timestamp":
            unit = package.pipeline.coercer().rule(tensor["name"]).unit
            if unit is not None:
                tensor["parameters"]["unit"] = unit
    if views:
        inputs = _view_marks(inputs, views, package.statistics)
    return {
        "name": name,
        "versions": [version],
        "platform": f"keel-{package.flavor}",
        "task": package.task,
        "inputs": inputs,
        "outputs": output_tensors(signature["outputs"]),
        "classes": package.classes,
        "package_sha256": package.sha256,
    }


def _view_marks(
    inputs: list[dict[str, Any]], views: Mapping[str, Any], statistics: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``inputs`` with the view features marked optional and filled, and the entity keys marked
    (those the model does not read added first: a client sends them)."""
    filled: dict[str, str] = {}
    keys: dict[str, list[str]] = {}
    for view, spec in sorted(views.get("views", {}).items()):
        for feature in spec.get("features", []):
            filled.setdefault(str(feature), f"view:{view}")
        for key in spec.get("entities", []):
            keys.setdefault(str(key), []).append(f"view:{view}")
    known = {i["name"] for i in inputs}
    columns = statistics.get("columns") if isinstance(statistics, Mapping) else None
    added = []
    for key in (k for k in keys if k not in known):
        dtype = ((columns or {}).get(key) or {}).get("dtype", "string")
        parameters = {"type": dtype, "nullable": False}
        added.append({"name": key, "datatype": DATATYPES.get(dtype, "BYTES"), "shape": [-1],
                      "parameters": parameters})  # fmt: skip
    for tensor in [*added, *inputs]:
        name = tensor["name"]
        if name in keys:
            tensor["parameters"]["entity_key"] = ",".join(keys[name])
        elif name in filled:
            tensor["parameters"] |= {"filled_by": filled[name], "optional": True}
    return added + inputs
