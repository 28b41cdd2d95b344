"""Great Expectations 1.x: the 15 checks as expectations on a pandas DataFrame.

usage: benchmarks/.peers/gx/bin/python run_gx.py PARQUET

Ephemeral context, pandas datasource, whole-DataFrame batch, default result format (SUMMARY).
Phases: import, read (pandas.read_parquet), setup (context, suite), validate (``vd.run``).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
warnings.filterwarnings("ignore")

from runner import Phases, emit  # noqa: E402

phases = Phases()
import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
import pandas as pd  # noqa: E402
from checks import CHECKS, check_id  # noqa: E402

phases.mark("import")
frame = pd.read_parquet(sys.argv[1])
phases.mark("read")


def expectation(kind: str, column: str, params: dict[str, object]) -> object:
    if kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=column)
    if kind == "between":
        return gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=params["min"], max_value=params["max"]
        )
    if kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=params["values"])
    return gxe.ExpectColumnValuesToBeOfType(column=column, type_=params["type"])


context = gx.get_context(mode="ephemeral")
asset = context.data_sources.add_pandas("pandas").add_dataframe_asset(name="adult")
batch = asset.add_batch_definition_whole_dataframe("all")
suite = context.suites.add(gx.ExpectationSuite(name="adult"))
for kind, column, params in CHECKS:
    suite.add_expectation(expectation(kind, column, params))
definition = context.validation_definitions.add(
    gx.ValidationDefinition(name="adult", data=batch, suite=suite)
)
phases.mark("setup")
outcome = definition.run(batch_parameters={"dataframe": frame})
phases.mark("validate")

KINDS = {
    "expect_column_values_to_not_be_null": "not_null",
    "expect_column_values_to_be_between": "between",
    "expect_column_values_to_be_in_set": "in_set",
    "expect_column_values_to_be_of_type": "of_type",
}
results: dict[str, object] = {"failed": []}
for result in outcome.results:
    config = result.expectation_config
    ident = check_id(KINDS[config.type], config.kwargs["column"])
    results[ident] = result.result.get("unexpected_count")
    if not result.success:
        results["failed"].append(ident)  # type: ignore[union-attr]
emit("Great Expectations", gx.__version__, len(frame), phases, results)
