"""The event array: building it from columns (ranges and polarity conventions), conversion from
other libraries' dtypes, and validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeshot.events.array import (
    EVENT_DTYPE,
    EventColumns,
    EventError,
    Limits,
    as_events,
    make_events,
    validate,
)

CALM = settings(max_examples=60)  # on top of conftest's profile

columns = st.integers(0, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n),
        st.lists(st.integers(0, 2**16 - 1), min_size=n, max_size=n),
        st.lists(st.integers(0, 2**16 - 1), min_size=n, max_size=n),
        st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n),
    )
)


@CALM
@given(columns)
def test_columns_in_range_are_stored_exactly(cols):
    t, x, y, p = cols
    ev = make_events(np.array(t, dtype=np.int64), x, y, p)
    assert ev.dtype == EVENT_DTYPE and len(ev) == len(t)
    assert ev["t"].tolist() == t and ev["x"].tolist() == x and ev["y"].tolist() == y
    assert ev["p"].tolist() == p


@CALM
@given(
    st.sampled_from("xy"),
    st.integers(0, 9),
    st.one_of(st.integers(2**16, 2**40), st.integers(-(2**40), -1)),
)
def test_an_out_of_range_coordinate_is_named_never_wrapped(field, index, value):
    cols = {"t": np.arange(10), "x": np.zeros(10, np.int64), "y": np.zeros(10, np.int64)}
    cols[field][index] = value
    with pytest.raises(EventError, match=f"events.{field}: must be in 0..65535") as e:
        make_events(cols["t"], cols["x"], cols["y"], np.zeros(10, np.int64))
    assert e.value.index == index


def test_the_examples_of_the_issue():
    with pytest.raises(EventError, match=r"events.x: .*first bad index 0"):
        make_events([0], [65546], [0], [1])  # used to wrap to 10
    tonic = np.zeros(3, dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
    tonic["p"] = [-1, 1, -1]
    tonic["t"] = [1, 2, 3]
    assert as_events(tonic)["p"].tolist() == [0, 1, 0]  # used to be 255 for -1
    too_late = np.array([2**63], dtype=np.uint64)
    with pytest.raises(EventError, match="events.t"):
        make_events(too_late, [0], [0], [0])


@pytest.mark.parametrize(
    ("p", "stored"),
    [
        ([0, 1, 1], [0, 1, 1]),
        ([-1, 1, -1], [0, 1, 0]),
        ([False, True, True], [0, 1, 1]),
        (np.array([0, 1, 1], np.uint8), [0, 1, 1]),
    ],
)
def test_polarity_conventions(p, stored):
    assert make_events([0, 1, 2], [0, 0, 0], [0, 0, 0], p)["p"].tolist() == stored


def test_bad_columns_are_named():
    with pytest.raises(EventError, match="events.p: polarity must be 0/1, -1/1.*index 1"):
        make_events([0, 1], [0, 0], [0, 0], [1, 2])
    with pytest.raises(EventError, match="events.y: column must be 1-D of length 2"):
        make_events([0, 1], [0, 0], [0], [1, 0])
    with pytest.raises(EventError, match="events.t: column must hold whole numbers.*index 1"):
        make_events([0.0, 1.5], [0, 0], [0, 0], [1, 0])
    with pytest.raises(EventError, match="events.x: column must hold finite numbers"):
        make_events([0, 1], [np.nan, 0], [0, 0], [1, 0])
    with pytest.raises(EventError, match="events.x: column must hold integers"):
        make_events([0, 1], ["a", "b"], [0, 0], [1, 0])


def test_as_events_reads_other_libraries_field_names():
    aedat = np.zeros(2, dtype=[("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
    aedat["on"] = [True, False]
    assert as_events(aedat)["p"].tolist() == [1, 0]
    mat = np.zeros(2, dtype=[("ts", "<u4"), ("x", "u1"), ("y", "u1"), ("pol", "u1")])
    mat["ts"] = [5, 6]
    assert as_events(mat)["t"].tolist() == [5, 6]
    ev = make_events([1], [2], [3], [1])
    assert as_events(ev) is ev
    with pytest.raises(EventError, match="events.p: no field named any of"):
        as_events(np.zeros(1, dtype=[("t", "<i8"), ("x", "<u2"), ("y", "<u2")]))
    with pytest.raises(EventError, match="structured array"):
        as_events(np.zeros(3))


@CALM
@given(st.lists(st.integers(0, 1000), min_size=2, max_size=30))
def test_validate_finds_the_first_decrease_and_sort_fixes_it(t):
    ev = make_events(t, np.zeros(len(t)), np.zeros(len(t)), np.zeros(len(t)))
    dec = [i for i in range(1, len(t)) if t[i] < t[i - 1]]
    if dec:
        with pytest.raises(EventError, match=f"first bad index {dec[0]}"):
            validate(ev)
        out = validate(ev, sort=True)
        assert out["t"].tolist() == sorted(t) and ev["t"].tolist() == t  # input untouched
    else:
        assert validate(ev) is ev


def test_validate_limits_name_field_rule_and_index():
    ev = make_events([0, 1, 2], [0, 5, 9], [0, 1, 3], [0, 1, 1])
    with pytest.raises(
        EventError, match=r"events.x: must be < sensor width 9 \(first bad index 2\)"
    ):
        validate(ev, Limits(width=9))
    with pytest.raises(EventError, match="events.y: must be < sensor height 3"):
        validate(ev, Limits(height=3))
    with pytest.raises(EventError, match="3 events exceed the limit of 2"):
        validate(ev, Limits(max_events=2))
    with pytest.raises(EventError, match="at least one event"):
        validate(ev[:0])
    assert len(validate(ev[:0], Limits(allow_empty=True))) == 0
    cols = EventColumns(ev["t"], ev["x"], ev["y"], ev["p"])
    assert validate(cols, Limits(width=10)) is cols
    np.testing.assert_array_equal(cols.to_array(), ev)


def test_the_error_names_the_earliest_bad_event_over_all_columns():
    """Whatever the column order, the first bad event is reported, so a reader that converts a
    file in blocks reports the same error for any block size (found by fuzzing .npy files)."""
    with pytest.raises(EventError, match=r"events.p: polarity .*\(first bad index 1\)"):
        make_events([0, 1, 2], [0, 0, 0], [0, 0, -1], [0, 2, 0])
    with pytest.raises(EventError, match=r"events.y: must be in 0..65535 \(first bad index 1\)"):
        make_events([0, 1, 2], [0, 0, 0], [0, -1, 0], [0, 2, 0])  # a tie: the earlier column
    with pytest.raises(EventError, match=r"events.x: column must hold whole numbers .*index 0"):
        make_events([0.0, 1.0], [0.5, -3.0], [0, 0], [0, 0])
