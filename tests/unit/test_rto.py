"""The LooksAlive retry timeout (RFC 6298 estimator), in simulated time: plain numbers in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minisft.core.rto import MAX_BACKOFFS, RTO_FLOOR, K, RtoEstimator

rtts = st.floats(min_value=0.0, max_value=2.0, allow_nan=False)
caps = st.floats(min_value=0.001, max_value=5.0, allow_nan=False)
# what happens to one ping: a reply after that many seconds, or None for a miss
histories = st.lists(st.one_of(rtts, st.none()), max_size=60)


def feed(estimator: RtoEstimator, history: list[float | None]) -> None:
    for rtt in history:
        if rtt is None:
            estimator.missed()
        else:
            estimator.sample(rtt)


def test_before_any_reply_a_ping_waits_the_configured_timeout() -> None:
    assert RtoEstimator().timeout(cap=0.3) == 0.3


@given(histories, caps)
def test_never_longer_than_the_configured_timeout(history: list[float | None],
                                                  cap: float) -> None:
    estimator = RtoEstimator()
    feed(estimator, history)
    assert 0 < estimator.timeout(cap) <= cap


@given(histories, st.floats(min_value=RTO_FLOOR, max_value=5.0))
def test_never_shorter_than_the_floor(history: list[float | None], cap: float) -> None:
    estimator = RtoEstimator()
    feed(estimator, history)
    assert estimator.timeout(cap) >= RTO_FLOOR


@given(histories, st.floats(min_value=0.0, max_value=0.5))
def test_converges_on_a_constant_round_trip(history: list[float | None], rtt: float) -> None:
    estimator = RtoEstimator()
    feed(estimator, history)
    for _ in range(200):
        estimator.sample(rtt)
    assert estimator.timeout(cap=10.0) == pytest.approx(max(RTO_FLOOR, rtt), rel=1e-3,
                                                        abs=1e-6)


@given(histories, st.integers(min_value=1, max_value=MAX_BACKOFFS + 4))
def test_consecutive_misses_double_it_up_to_the_cap(history: list[float | None],
                                                    misses: int) -> None:
    estimator = RtoEstimator()
    feed(estimator, [*history, 0.01])  # at least one reply: there is an estimate
    base = estimator.timeout(cap=1e9)
    waits = []
    for _ in range(misses):
        estimator.missed()
        waits.append(estimator.timeout(cap=1.0))
    expected = [min(1.0, base * 2 ** min(n, MAX_BACKOFFS)) for n in range(1, misses + 1)]
    assert waits == pytest.approx(expected)


def test_a_reply_after_misses_drops_the_backoff() -> None:
    estimator = RtoEstimator()
    estimator.sample(0.01)  # RFC 6298 2.2: SRTT = R, RTTVAR = R/2
    assert estimator.timeout(cap=1.0) == pytest.approx(0.01 + K * 0.005)
    estimator.missed()
    estimator.missed()
    assert estimator.timeout(cap=1.0) == pytest.approx(4 * 0.03)
    estimator.sample(0.01)  # RFC 6298 2.3: RTTVAR = 3/4 x 0.005, SRTT stays 10 ms
    assert estimator.timeout(cap=1.0) == pytest.approx(0.01 + K * 0.00375)


def test_a_jittery_link_waits_longer_than_a_steady_one() -> None:
    steady, jittery = RtoEstimator(), RtoEstimator()
    for n in range(100):
        steady.sample(0.010)
        jittery.sample(0.002 if n % 2 else 0.018)  # same mean, +-8 ms
    assert jittery.timeout(cap=1.0) > steady.timeout(cap=1.0) + 0.02
