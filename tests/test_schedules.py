"""Setpoint schedules: shape, bounds, and the unknown-name error."""

import pytest

from analysis.schedules import SCHEDULES, scheduled_target


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_bounds_and_start(name):
    vals = [scheduled_target(name, s, 100, 2.0, 0.4, 3) for s in range(101)]
    assert min(vals) >= 2.0 * 0.6 - 1e-9 and max(vals) <= 2.0 * 1.4 + 1e-9
    assert vals[0] == pytest.approx(2.0)


def test_constant():
    assert {scheduled_target("constant", s, 50, 1.3) for s in range(51)} == {1.3}


def test_increase_then_decrease():
    v = [scheduled_target("id", s, 100, 1.0, 0.5) for s in range(101)]
    assert v[50] == pytest.approx(1.5) and v[100] == pytest.approx(0.5)
    assert all(a <= b for a, b in zip(v[:50], v[1:51], strict=True))
    assert all(a >= b for a, b in zip(v[50:100], v[51:], strict=True))


def test_decrease_increase_decrease():
    v = lambda s: scheduled_target("did", s, 90, 1.0, 0.5)  # noqa: E731
    assert v(30) == pytest.approx(0.5) and v(60) == pytest.approx(1.5) and v(90) == pytest.approx(0.5)
    assert v(15) < 1.0 and v(45) > v(30) and v(75) < v(60)


def test_oscillatory_decay():
    v = [scheduled_target("od", s, 300, 1.0, 0.5, 3) for s in range(301)]
    assert v[-1] == pytest.approx(0.5)
    # It oscillates: the sign of the slope changes at least 2 x cycles - 1 times, and the swing shrinks.
    slopes = [b - a for a, b in zip(v, v[1:], strict=False)]
    flips = sum(1 for a, b in zip(slopes, slopes[1:], strict=False) if a * b < 0)
    assert flips >= 5
    first, last = v[:100], v[200:]
    assert max(first) - min(first) > max(last) - min(last)


def test_unknown_and_bad_amplitude():
    with pytest.raises(ValueError, match="valid: constant"):
        scheduled_target("nope", 0, 10, 1.0)
    with pytest.raises(ValueError, match="amplitude"):
        scheduled_target("id", 0, 10, 1.0, amplitude=1.5)
