"""A column of codes is text, not numbers with stray cells: MovieLens' ``zip_code`` (US zips and
18 Canadian postcodes of 943) draws no "fix those cells" warning from ``keel init`` or ``keel
schema infer``, while a few typos in a number column (and a repeated missing marker) still do."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pv
import pytest

from keel.commands.init import init_from_file
from keel.validate.numeric_text import mostly_numbers, names_codes, strays_in_table

MOVIELENS = Path("/work/shared/data/movielens-100k")
USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
needs_movielens = pytest.mark.skipif(
    not (MOVIELENS / "u.user").exists(), reason="MovieLens 100K not in /work/shared/data"
)


def _users() -> pa.Table:
    options = pv.ReadOptions(column_names=USER_COLUMNS)
    parse = pv.ParseOptions(delimiter="|")
    convert = pv.ConvertOptions(column_types={"zip_code": pa.string()})
    return pv.read_csv(MOVIELENS / "u.user", options, parse, convert)


def _ages(strays: dict[int, str], rows: int = 943) -> pa.ChunkedArray:
    values = [str(18 + i % 50) for i in range(rows)]
    for row, value in strays.items():
        values[row] = value
    return pa.chunked_array([values])


@needs_movielens
def test_movielens_zip_codes_are_text_not_stray_cells(tmp_path: Path) -> None:
    users = _users()
    zips = users.column("zip_code")
    letters = [z for z in zips.to_pylist() if not z.isdigit()]
    assert len(letters) == 18 and "M4J2K" in letters  # the Canadian postcodes are there
    assert strays_in_table(users) == ()
    # not only because of the name: 18 of 943 (1.9 %), 17 spellings, is a text column
    assert mostly_numbers("area", zips) is None
    # as a new user meets it: `keel init --from` over the file with a header row
    csv = tmp_path / "users.csv"
    pv.write_csv(users, csv)
    made = init_from_file(tmp_path / "p", csv, "gender")
    assert not [w for w in made.warnings if "holds numbers" in w], made.warnings
    assert "holds numbers" not in made.config.read_text()


@needs_movielens
def test_ratings_joined_to_users_are_not_flagged_either() -> None:
    """The table the trial used: every rating with its user's zip code (2,086 postcodes)."""
    ratings = pv.read_csv(
        MOVIELENS / "u.data",
        pv.ReadOptions(column_names=["user_id", "item_id", "rating", "timestamp"]),
        pv.ParseOptions(delimiter="\t"),
    )
    joined = ratings.join(_users(), "user_id")
    zips = joined.column("zip_code")
    assert sum(not z.isdigit() for z in zips.to_pylist()) == 2086
    assert mostly_numbers("zip_code", zips) is None
    assert mostly_numbers("area", zips) is None  # 2 %: too many for stray cells


def test_a_few_typos_in_a_number_column_are_still_flagged() -> None:
    found = mostly_numbers("age", _ages({5: "seventeen", 40: "16 yrs", 700: "17y"}))
    assert found is not None and (found.strays, found.values) == (3, 943)
    assert found.examples == ("seventeen", "16 yrs", "17y")
    # up to 1 % scattered: 9 of 943
    nine = _ages({i * 100: f"{i}y" for i in range(9)})
    assert mostly_numbers("age", nine) is not None
    assert mostly_numbers("age", _ages({i * 50: f"{i}y" for i in range(18)})) is None  # 1.9 %
    # one typo in a small file is a finding however large its share (1 of 60)
    assert mostly_numbers("age", _ages({7: "17y"}, rows=60)) is not None


def test_a_repeated_missing_marker_is_flagged_up_to_five_percent() -> None:
    marked = _ages({i * 25: "?" for i in range(37)})  # 3.9 %, one spelling: na_values fits
    found = mostly_numbers("age", marked)
    assert found is not None and found.strays == 37 and found.examples == ("?",)
    assert mostly_numbers("age", _ages({i * 15: "?" for i in range(60)})) is None  # 6.4 %
    # a vocabulary of many spellings is a text column, however rare each value is
    words = _ages({i * 18: f"w{chr(97 + i % 26)}{i}" for i in range(52)}, rows=10_000)
    assert mostly_numbers("age", words) is None


def test_a_code_column_is_text_when_its_non_numbers_look_like_codes() -> None:
    postcodes = _ages({3: "M4J2K", 9: "V0R2M"})
    assert mostly_numbers("zip", postcodes) is None
    assert mostly_numbers("postal_code", postcodes) is None
    assert mostly_numbers("age", postcodes) is not None  # a number column: two odd cells
    phones = _ages({3: "+1 555-0100", 9: "(555) 0199"})
    assert mostly_numbers("phone", phones) is None
    # a marker in a code column still means "missing": the na_values advice fits
    unknown = mostly_numbers("zip_code", _ages({3: "unknown", 9: "M4J2K"}))
    assert unknown is not None and unknown.examples == ("unknown", "M4J2K")


@pytest.mark.parametrize(
    ("name", "codes"),
    [
        ("zip", True), ("zip_code", True), ("ZipCode", True), ("PostalCode", True),
        ("user_id", True), ("UserID", True), ("phone_number", True), ("idle", False),
        ("zipper", False), ("age", False), ("hours-per-week", False),
    ],
)  # fmt: skip
def test_names_that_say_codes(name: str, codes: bool) -> None:
    assert names_codes(name) is codes
