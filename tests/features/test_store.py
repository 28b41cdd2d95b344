"""Point-in-time joins: historical() against a brute-force reference, bitemporal, TTL, windows."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import ConfigError, DataValidationError
from keel.features.store import FeatureStore
from keel.features.views import FeatureView

T0 = datetime(2024, 1, 1)


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _history(rows: list[tuple[int, int, int | None, float | None]]) -> pa.Table:
    """(key, event minute, created minute or None, value) -> a source table."""
    return pa.table(
        {
            "k": pa.array([r[0] for r in rows], pa.int64()),
            "e": pa.array([_at(r[1]) for r in rows], pa.timestamp("us")),
            "c": pa.array([None if r[2] is None else _at(r[2]) for r in rows], pa.timestamp("us")),
            "x": pa.array([r[3] for r in rows], pa.float64()),
            "e_copy": pa.array([_at(r[1]) for r in rows], pa.timestamp("us")),
            "c_copy": pa.array(
                [_at(r[1] if r[2] is None else r[2]) for r in rows], pa.timestamp("us")
            ),
        }
    )


WINDOWS = {
    "x_sum_30m": ("sum", 30),
    "x_mean_30m": ("mean", 30),
    "count_90m": ("count", 90),
    "x_min_90m": ("min", 90),
    "x_max_90m": ("max", 90),
}


def _view(source: pa.Table, *, bitemporal: bool, ttl: str) -> FeatureView:
    aggs: list[Any] = [
        {"function": fn, "column": None if fn == "count" else "x", "window": f"{w}m"}
        for fn, w in WINDOWS.values()
    ]
    return FeatureView(
        "v",
        entities=["k"],
        timestamp="e",
        created_timestamp="c" if bitemporal else None,
        source=source,
        ttl=ttl,
        features=["x", "e_copy", "c_copy", *aggs],
    )


def _reference(
    rows: list[tuple[int, int, int | None, float | None]],
    entities: list[tuple[int, int]],
    *,
    bitemporal: bool,
    ttl: int,
) -> list[dict[str, Any]]:
    """The definition, one entity row at a time."""
    out = []
    for key, t in entities:
        visible = []
        for rid, (k, e, c, x) in enumerate(rows):
            created = (e if c is None else c) if bitemporal else e
            if k == key and e <= t and created <= t:
                visible.append((e, created, rid, x))
        result: dict[str, Any] = {"x": None, "e_copy": None, "c_copy": None}
        if visible:
            e, created, rid, x = max(visible)
            if not ttl or e >= t - ttl:
                c_raw = rows[rid][2]
                result = {"x": x, "e_copy": _at(e), "c_copy": _at(e if c_raw is None else c_raw)}
        if bitemporal:  # versions of one event: the latest created by t
            latest: dict[int, tuple[int, int, float | None]] = {}
            for e, created, rid, x in visible:
                if e not in latest or (created, rid) > latest[e][:2]:
                    latest[e] = (created, rid, x)
            events = [(e, v[2]) for e, v in latest.items()]
        else:
            events = [(e, x) for e, _, _, x in visible]
        for name, (fn, w) in WINDOWS.items():
            inside = [x for e, x in events if e > t - w]
            values = [x for x in inside if x is not None]
            if fn == "count":
                result[name] = len(inside)
            elif not values:
                result[name] = None
            else:
                result[name] = {"sum": sum, "min": min, "max": max}.get(
                    fn, lambda v: sum(v) / len(v)
                )(values)
        out.append(result)
    return out


def _check(rows, entities, *, bitemporal: bool, ttl: int) -> None:
    store = FeatureStore(False, views=[_view(_history(rows), bitemporal=bitemporal, ttl=f"{ttl}m")])
    ent = pa.table(
        {
            "k": pa.array([k for k, _ in entities], pa.int64()),
            "t": pa.array([_at(t) for _, t in entities], pa.timestamp("us")),
        }
    )
    got = store.historical(ent, ["v:*"], timestamp="t").to_pylist()
    want = _reference(rows, entities, bitemporal=bitemporal, ttl=ttl)
    assert len(got) == len(entities)
    for (key, t), g, w in zip(entities, got, want, strict=True):
        assert g["k"] == key and g["t"] == _at(t)  # order and count preserved
        for name, expected in w.items():
            value = g[name]
            if isinstance(expected, float) and value is not None:
                assert math.isclose(value, expected, rel_tol=1e-12), (name, key, t)
            else:
                assert value == expected, (name, key, t, value, expected)
        # nothing from the future: no event (and, bitemporally, no creation) after the row's time
        for stamp in (g["e_copy"], g["c_copy"]) if bitemporal else (g["e_copy"],):
            assert stamp is None or stamp <= _at(t)


# a constructed history: a late correction, a duplicate event, values outside the TTL
HISTORY: list[tuple[int, int, int | None, float | None]] = [
    (1, 0, 0, 10.0),
    (1, 10, 11, 20.0),
    (1, 10, 50, 25.0),  # correction of minute 10, written at minute 50
    (1, 20, 20, None),
    (1, 20, 20, 30.0),  # same event and creation time: the later row wins
    (1, 100, 101, 40.0),
    (2, 5, 5, 1.0),
    (2, 200, 260, 2.0),  # arrives an hour late
    (3, 0, None, 7.0),  # no created time: visible from its event time
]
ENTITIES = [
    (1, 15),
    (1, 10),
    (1, 49),
    (1, 50),
    (1, 60),
    (1, 99),
    (1, 101),
    (1, 200),
    (2, 4),
    (2, 5),
    (2, 100),
    (2, 230),
    (2, 261),
    (3, 0),
    (3, 500),
    (4, 100),
    (1, 15),
]


@pytest.mark.parametrize("bitemporal", [True, False])
@pytest.mark.parametrize("ttl", [0, 45])
def test_constructed_history_matches_reference(bitemporal: bool, ttl: int) -> None:
    _check(HISTORY, ENTITIES, bitemporal=bitemporal, ttl=ttl)


def test_late_correction_does_not_leak() -> None:
    store = FeatureStore(False, views=[_view(_history(HISTORY), bitemporal=True, ttl="0")])
    ent = pa.table({"k": [1, 1], "t": [_at(49), _at(50)]})
    got = store.historical(ent, ["v:x"], timestamp="t").column("x").to_pylist()
    assert got == [30.0, 30.0]  # latest event is minute 20 either way
    ent = pa.table({"k": [1, 1], "t": [_at(15), _at(55)]})
    view = FeatureView(
        "w",
        entities=["k"],
        timestamp="e",
        created_timestamp="c",
        source=_history(HISTORY[:3]),
        features=["x"],
    )
    got = FeatureStore(False, views=[view]).historical(ent, ["w:x"], timestamp="t")
    assert got.column("x").to_pylist() == [20.0, 25.0]  # the correction only after minute 50


rows_st = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.integers(0, 60),
        st.one_of(st.none(), st.integers(-5, 80)),
        st.one_of(st.none(), st.integers(-50, 50).map(float)),
    ),
    min_size=1,
    max_size=25,
)
entities_st = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 90)), min_size=1, max_size=15)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_st, entities=entities_st, bitemporal=st.booleans(), ttl=st.sampled_from([0, 7, 30])
)
def test_random_histories_match_reference(rows, entities, bitemporal, ttl) -> None:
    _check(rows, entities, bitemporal=bitemporal, ttl=ttl)


def test_pandas_in_pandas_out_and_names() -> None:
    import pandas as pd

    store = FeatureStore(False, views=[_view(_history(HISTORY), bitemporal=True, ttl="0")])
    df = pd.DataFrame({"k": [1, 2], "when": [_at(30), _at(30)]})
    out = store.historical(df, ["v:x", "v:count_90m"])
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["k", "when", "x", "count_90m"]
    full = store.historical(df, ["v:x"], full_names=True)
    assert "v__x" in full.columns


def test_errors_name_the_problem() -> None:
    store = FeatureStore(False, views=[_view(_history(HISTORY), bitemporal=True, ttl="0")])
    ent = pa.table({"k": [1], "t": [_at(1)]})
    with pytest.raises(ConfigError, match="no feature 'nope'"):
        store.historical(ent, ["v:nope"])
    with pytest.raises(ConfigError, match="unknown feature view 'w'"):
        store.historical(ent, ["w:x"])
    with pytest.raises(DataValidationError, match="lack column"):
        store.historical(pa.table({"key": [1], "t": [_at(1)]}), ["v:x"], timestamp="t")
    with pytest.raises(ConfigError, match="ttl"):
        FeatureView(
            "bad",
            entities=["k"],
            timestamp="e",
            source=_history(HISTORY),
            features=["x"],
            ttl="7 days",
        )


def test_keel_yaml_views_are_validated(tmp_path) -> None:
    from keel.config import load_config

    base = (
        "project: p\ndata: {train: {path: t.csv}, target: y}\nmodel: {name: m}\n"
        "feature_views:\n  - name: v\n    entities: [k]\n    timestamp: ts\n"
        "    source: {path: f.parquet, format: parquet}\n"
    )
    (tmp_path / "keel.yaml").write_text(base + "    features: [x, {function: mean, window: 7d}]\n")
    with pytest.raises(ConfigError, match="'mean' needs a 'column'"):
        load_config(tmp_path)
    (tmp_path / "keel.yaml").write_text(base + "    features: [x]\n    tll: 7d\n")
    with pytest.raises(ConfigError, match=r"keel\.yaml:10: unknown key 'tll'.*Did you mean 'ttl'"):
        load_config(tmp_path)
    (tmp_path / "keel.yaml").write_text(base + "    features: [x]\nfeatures: {views: [v.x]}\n")
    with pytest.raises(ConfigError, match="not a 'view:feature' reference"):
        load_config(tmp_path)
    (tmp_path / "keel.yaml").write_text(base + "    features: [x, k]\n")
    with pytest.raises(ConfigError, match="entity keys, not features"):
        load_config(tmp_path)


@pytest.mark.parametrize("hash_rows", [0, 1_000])  # the exact count alone; hashes first
def test_tie_check_is_exact_over_several_keys(monkeypatch, hash_rows: int) -> None:
    import duckdb

    from keel.features import pit as store_module

    monkeypatch.setattr(store_module, "_HASH_CHECK_ROWS", hash_rows)
    view = FeatureView(
        "v", entities=["a", "b"], timestamp="t", source=pa.table({"x": [1.0]}), features=["x"]
    )
    con = duckdb.connect()
    base = {"a": [1, 1, 2, None], "b": ["x", "y", "x", "x"], "__e": [_at(0)] * 4}
    con.register("unique_rows", pa.table(base))
    assert not store_module._has_ties(con, view, "unique_rows")
    tied = {k: [*v, v[1]] for k, v in base.items()}  # (1, 'y', t0) twice
    con.register("tied_rows", pa.table(tied))
    assert store_module._has_ties(con, view, "tied_rows")
    null_tied = {k: [*v, v[3]] for k, v in base.items()}  # (NULL, 'x', t0) twice
    con.register("null_tied_rows", pa.table(null_tied))
    assert store_module._has_ties(con, view, "null_tied_rows")
