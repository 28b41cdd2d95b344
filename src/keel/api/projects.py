"""The Python API for projects and data: init, ingest, snapshots, schema, validation."""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.data.reader import ReadOptions
    from keel.project import Project


#: Bundled example projects (``keel init --example NAME``): the data files ship with each.
EXAMPLES = ("adult", "bike-sharing", "california-housing")


def _project(path: str | Path | None) -> Project:
    """Open a project; imported here so that ``keel validate FILE`` (which needs none) does
    not load the metadata store's SQLAlchemy."""
    from keel.project import Project

    return Project(path)


def _examples_root() -> Path:
    """The bundled examples: beside the package when installed, else in the source tree."""
    package = Path(__file__).resolve().parents[1]  # src/keel (or site-packages/keel)
    for candidate in (package / "examples", package.parents[1] / "examples"):
        if candidate.is_dir():
            return candidate
    raise NotFoundError("the bundled examples are not installed; reinstall keel from source.")


def init(
    directory: str | Path,
    *,
    example: str | None = None,
    source: str | Path | None = None,
    target: str | None = None,
    copy: bool = True,
    force: bool = False,
    read: ReadOptions | None = None,
) -> Path:
    """Scaffold a project: a bundled example, or a keel.yaml for a data file of your own.

    Args:
        directory: The project directory (created when missing).
        example: A bundled example (see :data:`EXAMPLES`); ``adult`` when no ``source``.
        source: A CSV or Parquet file to write a keel.yaml for, with ``target``; every
            inferred choice (task, positive label, gates, slices, columns set aside) is
            commented in the file.
        target: The column to predict (with ``source``).
        copy: Copy ``source`` into ``directory/data/`` (default) rather than reference it.
        force: Overwrite an existing keel.yaml.
        read: How to read a CSV ``source`` (:class:`keel.data.ReadOptions`: delimiter,
            header, column names, encoding, quote), written into keel.yaml's source so that
            ``keel run`` reads it the same way; unset options are sniffed.

    Returns:
        The project directory.

    Raises:
        ConfigError: An unknown example; both an example and a source, or a target without a
            source; an unreadable source or an unknown target; a keel.yaml already there.

    Example:
        >>> keel.init("penguins", source="penguins.csv", target="species")
        >>> names = keel.data.ReadOptions(columns=("user_id", "item_id", "rating", "timestamp"))
        >>> keel.init("ratings", source="u.data", target="rating", read=names)
    """
    if source is not None:
        if example is not None:
            raise ConfigError("give either an example or a source file (--from), not both.")
        from keel.commands.init import init_from_file

        made = init_from_file(directory, source, target, copy=copy, force=force, read=read)
        return made.directory
    if target is not None:
        raise ConfigError("target (--target) goes with a source file: add --from FILE.")
    if read is not None:
        msg = "reading options (--columns, --delimiter...) go with a source file: add --from FILE."
        raise ConfigError(msg)
    example = example or "adult"
    if example not in EXAMPLES:
        close = difflib.get_close_matches(example, EXAMPLES, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        msg = f"unknown example '{example}'.{hint} Examples: {', '.join(EXAMPLES)}."
        raise ConfigError(msg, field="--example")
    target_dir = Path(directory)
    if (target_dir / "keel.yaml").exists() and not force:
        raise ConfigError(
            f"{target_dir / 'keel.yaml'} already exists. Use another directory or --force."
        )
    bundled = _examples_root() / example
    target_dir.mkdir(parents=True, exist_ok=True)
    for item in bundled.iterdir():
        if item.name in (".keel", "schema.yaml"):
            continue
        destination = target_dir / item.name
        if item.is_dir():
            shutil.copytree(item, destination, dirs_exist_ok=True)
        else:
            shutil.copy2(item, destination)
    return target_dir


def _reading(read: ReadOptions | None, project: Project) -> ReadOptions:
    """``read``, with the training source's NA tokens unless it names its own: a file to
    score is read as the training data was."""
    from dataclasses import replace

    from keel.data.reader import ReadOptions

    read = read or ReadOptions()
    tokens = tuple(project.config.data.train.na_values)
    return read if read.na_values or not tokens else replace(read, na_values=tokens)


_SHA_PREFIX = re.compile(r"^[0-9a-fA-F]{6,64}$")


DataLike = Any  # a pyarrow Table, a pandas DataFrame, a CSV/Parquet path, or a snapshot sha


def resolve_data(
    data: DataLike, *, project: str | Path | None = None, keep_csv: bool = False
) -> pa.Table | Path:
    """A table, or a Parquet file to stream, for anything that names data.

    Args:
        data: A pyarrow Table, a pandas DataFrame, a CSV or Parquet path, or the sha256 (or a
            unique prefix of at least 6 hex digits) of a snapshot in the project.
        project: The project to look snapshots up in (default: nearest keel.yaml).
        keep_csv: Return a CSV file's path too (for a reader that streams it) instead of its
            table.

    Raises:
        ConfigError: ``data`` is neither an existing file nor a snapshot of the project.
    """
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if hasattr(data, "to_records") and hasattr(data, "columns"):  # a pandas DataFrame
        return pa.Table.from_pandas(data, preserve_index=False)
    path = Path(str(data)).expanduser()
    if path.exists():
        if path.suffix.lower() in (".parquet", ".pq"):
            return path
        from keel.data.sources import CSV_SUFFIXES, read_table

        if keep_csv and path.suffix.lower() in CSV_SUFFIXES:
            return path
        return read_table(path)
    hint = "Pass a CSV or Parquet path, or a snapshot sha from 'keel data list'."
    if not _SHA_PREFIX.match(str(data)):
        raise ConfigError(f"'{data}' is neither a file nor a snapshot: no such file. {hint}")
    try:
        with _project(project) as proj:
            artifact = proj.metadata.get_artifact(str(data))
            if artifact.kind != "snapshot":
                msg = f"artifact {artifact.short} is a {artifact.kind}, not a snapshot."
                raise ConfigError(msg, field="data")
            return proj.artifacts.local_path(artifact.sha256)
    except (NotFoundError, ConfigError) as exc:
        why = exc.message.rstrip(".")
        msg = f"'{data}' is neither a file nor a snapshot of the project ({why}). {hint}"
        raise ConfigError(msg, field="data") from exc


def load_data(data: DataLike, *, project: str | Path | None = None) -> pa.Table:
    """Like :func:`resolve_data`, read into one table."""
    import pyarrow.parquet as pq

    found = resolve_data(data, project=project)
    return pq.read_table(found) if isinstance(found, Path) else found


def ingest(*, split: str = "all", project: str | Path | None = None) -> dict[str, Any]:
    """Ingest the declared source(s) into snapshots now; bad rows go to a quarantine artifact.

    Returns:
        Split name -> :class:`keel.data.IngestResult`.
    """
    from keel.data import ingest as ingest_source

    with _project(project) as proj:
        sources = {"train": proj.config.data.train, "test": proj.config.data.test}
        if split not in (*sources, "all"):
            raise ConfigError(f"split must be train, test or all; got '{split}'.", field="split")
        if split == "test" and sources["test"] is None:
            raise ConfigError("data.test is not set in keel.yaml; add a test source.")
        wanted = [name for name in sources if split in ("all", name)]
        return {
            name: ingest_source(source, proj.root, proj, split=name)
            for name in wanted
            if (source := sources[name]) is not None
        }


def snapshots(project: str | Path | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
    """Recorded snapshots, newest first."""
    from keel.data import list_snapshots

    with _project(project) as proj:
        return list_snapshots(proj, limit=limit)


def infer_schema(
    data: DataLike,
    *,
    target: str | None = None,
    sensitive: list[str] | None = None,
    project: str | Path | None = None,
) -> Any:
    """Infer a :class:`keel.validate.schema.Schema` (types, nullability, domains, roles)."""
    from keel.validate.schema import infer_schema as infer
    from keel.validate.statistics import compute_statistics

    statistics = compute_statistics(resolve_data(data, project=project))
    wanted = [c for c in [target, *(sensitive or [])] if c]
    missing = [c for c in wanted if c not in statistics["columns"]]
    if missing:
        raise ConfigError(
            f"no column '{missing[0]}' in {data} (columns: {', '.join(statistics['columns'])}).",
            field=missing[0],
        )
    return infer(statistics, target=target, sensitive=sensitive or [])


def validate(
    data: DataLike,
    *,
    schema: Any = None,
    reference: Any = None,
    target: str | None = None,
    outliers: bool = False,
    label_noise: bool = False,
    project: str | Path | None = None,
    read: ReadOptions | None = None,
) -> Any:
    """Validate data against a schema and a reference; returns a ``ValidationReport``.

    Args:
        data: What to check (see :func:`resolve_data`), or a file opened by
            :func:`keel.data.reader.open_file`.
        schema: A ``Schema``, a schema.yaml path, or None to infer one from the reference.
        reference: Data (as ``data``), a statistics dict, or a statistics JSON file or artifact.
        target: The label column (label shift, label noise).
        outliers: Also look for outlying rows (sampled).
        label_noise: Also look for likely mislabeled rows (sampled; needs ``target``).
        project: Where snapshot shas are looked up.
        read: How to read a CSV ``data`` (delimiter, header, ...); default: detected.

    Raises:
        DataValidationError: None of the schema's (or reference's) columns is in the data:
            the message says how the file was read and the likely fix.

    Example:
        >>> report = keel.validate("new.csv", reference="train.parquet", target="income")
        >>> report.ok, [a.kind for a in report.anomalies]
    """
    from keel.data.columns import check_columns
    from keel.data.files import open_data
    from keel.data.reader import CsvFile
    from keel.validate.anomalies import validate_data
    from keel.validate.schema import Schema, read_schema

    contract = schema if isinstance(schema, Schema) or schema is None else read_schema(Path(schema))
    ref = None if reference is None else _load_reference(reference, project)
    name = Path(str(data)).name if isinstance(data, str | Path) else "data"
    opened = (
        data if isinstance(data, CsvFile) else resolve_data(data, project=project, keep_csv=True)
    )
    if isinstance(opened, Path):  # files are streamed, not loaded
        opened = open_data(opened, read)
    if isinstance(opened, CsvFile):
        name = opened.path.name
    expected = (
        list(contract.columns) if contract is not None else list((ref or {}).get("columns", []))
    )
    of = "schema" if contract is not None else "reference"
    check_columns(opened, expected, of=of, some_missing_ok=True, where=name)
    return validate_data(
        opened,
        schema=contract,
        reference=ref,
        target=target,
        name=name,
        outliers=outliers,
        label_noise=label_noise,
    )


def _load_reference(reference: Any, project: str | Path | None) -> dict[str, Any]:
    """Statistics of the reference: given, from a JSON file or artifact, or computed."""
    if isinstance(reference, dict):
        return reference
    if isinstance(reference, str | Path):
        path = Path(str(reference)).expanduser()
        if path.suffix.lower() == ".json" and path.exists():
            return _statistics(path.read_bytes(), str(path))
        if not path.exists():
            with _project(project) as proj:
                artifact = proj.metadata.get_artifact(str(reference))
                if artifact.kind == "statistics":
                    return _statistics(proj.artifacts.get(artifact.sha256), artifact.short)
    from keel.validate.statistics import compute_statistics

    # the reference's statistics in one streamed pass: a large file is never held whole
    return compute_statistics(resolve_data(reference, project=project, keep_csv=True))


def _statistics(blob: bytes, where: str) -> dict[str, Any]:
    import orjson

    try:
        value = orjson.loads(blob)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc}).") from exc
    if not isinstance(value, dict) or "columns" not in value or "rows" not in value:
        raise ConfigError(f"{where}: not Keel statistics (needs 'rows' and 'columns').")
    return value
