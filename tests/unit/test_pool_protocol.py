"""Pool heartbeats: round trip, authentication, replay protection, and fuzzing (hypothesis)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisft.config.model import PoolConfig, PoolMemberConfig
from minisft.pools.protocol import (
    HEADER,
    MAX_DATAGRAM,
    BadMessage,
    Heartbeat,
    ReplayState,
    config_digest,
    decode,
    encode,
)

KEY = b"k" * 32
OTHER_KEY = b"x" * 32
NOW = 1_700_000_000.0
FUZZ = settings(max_examples=400, deadline=None)


def pool(**kw: Any) -> PoolConfig:
    base: dict[str, Any] = {
        "name": "front",
        "members": (PoolMemberConfig("a", ipaddress.ip_address("192.0.2.1")),
                    PoolMemberConfig("b", ipaddress.ip_address("192.0.2.2"), 2)),
        "addresses": (ipaddress.ip_interface("192.0.2.101/24"),),
        "key": KEY,
    }
    base.update(kw)
    return PoolConfig(**base)


def hb(seq: int = 1, *, member: str = "a", boot: str = "00112233aabbccdd", time: float = NOW,
       pool_name: str = "front", **kw: Any) -> Heartbeat:
    return Heartbeat(pool=pool_name, member=member, boot=boot, seq=seq, time=time,
                     state=kw.pop("state", "alive"),
                     holds=kw.pop("holds", ("192.0.2.101/24", "2001:db8::101/64")),
                     wants=kw.pop("wants", ()), lost=kw.pop("lost", ("c",)),
                     digest=kw.pop("digest", config_digest(pool())))


def rs(**kw: Any) -> ReplayState:
    return ReplayState(pool="front", members=kw.pop("members", {"a", "b", "c"}), **kw)


def reason(data: bytes, state: ReplayState | None = None, key: bytes = KEY,
           now: float = NOW) -> str:
    with pytest.raises(BadMessage) as info:
        decode(data, key, state or rs(), now)
    return info.value.reason


def sign(body: bytes, key: bytes = KEY) -> bytes:
    payload = HEADER + body
    return payload + hmac.new(key, payload, hashlib.sha256).digest()


def test_round_trip_and_size() -> None:
    msg = hb()
    data = encode(msg, KEY)
    assert decode(data, KEY, rs(), NOW) == msg
    assert len(data) < 400  # a few addresses fit in one small frame


def test_forged_wrong_pool_unknown_member() -> None:
    assert reason(encode(hb(), OTHER_KEY)) == "forged"
    assert reason(encode(hb(pool_name="back"), KEY)) == "wrong_pool"
    assert reason(encode(hb(member="zz"), KEY)) == "unknown_member"


def test_a_heartbeat_from_another_members_address_leaves_that_members_state_alone() -> None:
    """b (a key holder) sends a new boot of a from b's address: rejected before it can make
    a's real heartbeats look like an older boot."""
    state = rs()
    decode(encode(hb(7, boot="aaaaaaaaaaaaaaaa"), KEY), KEY, state, NOW, sender="a")
    fake = encode(hb(1, boot="bbbbbbbbbbbbbbbb", time=NOW + 1), KEY)
    with pytest.raises(BadMessage) as info:
        decode(fake, KEY, state, NOW + 1, sender="b")
    assert info.value.reason == "wrong_sender"
    decode(encode(hb(8, boot="aaaaaaaaaaaaaaaa", time=NOW + 2), KEY), KEY, state, NOW + 2,
           sender="a")


def test_replay_of_the_same_and_older_sequence() -> None:
    state = rs()
    first = encode(hb(5), KEY)
    decode(first, KEY, state, NOW)
    assert reason(first, state) == "replayed"
    assert reason(encode(hb(4), KEY), state) == "replayed"
    decode(encode(hb(6), KEY), KEY, state, NOW + 1)


def test_restarted_sender_is_accepted_and_its_old_boot_is_not() -> None:
    state = rs()
    old = encode(hb(900, boot="aaaaaaaaaaaaaaaa", time=NOW), KEY)
    decode(old, KEY, state, NOW)
    decode(encode(hb(1, boot="bbbbbbbbbbbbbbbb", time=NOW + 2), KEY), KEY, state, NOW + 2)
    later_old = encode(hb(901, boot="aaaaaaaaaaaaaaaa", time=NOW + 1), KEY)
    assert reason(later_old, state, now=NOW + 3) == "replayed"


def test_timestamp_window() -> None:
    assert reason(encode(hb(time=NOW - 31), KEY)) == "stale"
    assert reason(encode(hb(time=NOW + 31), KEY)) == "stale"
    decode(encode(hb(time=NOW - 29), KEY), KEY, rs(), NOW)


def test_replay_state_untouched_by_rejected_messages() -> None:
    state = rs()
    assert reason(encode(hb(10, member="zz"), KEY), state) == "unknown_member"
    assert state.senders == {}
    assert reason(encode(hb(10, time=NOW + 100), KEY), state) == "stale"
    decode(encode(hb(1), KEY), KEY, state, NOW)


def test_authenticated_but_invalid_bodies_are_malformed() -> None:
    good = json.loads(encode(hb(), KEY)[len(HEADER):-32])
    for change in ({"s": -1}, {"s": True}, {"t": "now"}, {"st": "dead"}, {"h": "x"},
                   {"h": [1]}, {"b": "xyz"}, {"d": "0"}, {"m": ""}, {"extra": 1}):
        body = {**good, **change}
        assert reason(sign(json.dumps(body).encode())) == "malformed", change
    assert reason(sign(b"{not json")) == "malformed"
    assert reason(sign(b'{"t": NaN}')) == "malformed"
    assert reason(sign(b"[" * 3000 + b"]" * 3000)) == "malformed"
    assert reason(sign(b"\xff\xfe")) == "malformed"


def test_too_large_is_refused_both_ways() -> None:
    many = tuple(f"2001:db8::{i:x}/128" for i in range(600))
    with pytest.raises(ValueError, match="exceeds"):
        encode(hb(holds=many), KEY)
    assert reason(b"mSFT\x01" + b" " * MAX_DATAGRAM) == "malformed"


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        encode(hb(), b"short")


def test_config_digest_ignores_the_key_and_sees_the_rest() -> None:
    assert config_digest(pool()) == config_digest(pool(key=b"y" * 40))
    assert config_digest(pool()) != config_digest(pool(
        addresses=(ipaddress.ip_interface("192.0.2.102/24"),)))
    assert config_digest(pool(preferred={"192.0.2.101": "a"})) == config_digest(
        pool(preferred={"192.0.2.101/24": "a"}))


# ---------------------------------------------------------------- fuzzing

@given(st.binary(max_size=MAX_DATAGRAM + 10))
@FUZZ
def test_random_bytes_only_raise_bad_message(data: bytes) -> None:
    with pytest.raises(BadMessage):
        decode(data, KEY, rs(), NOW)


@given(st.binary(max_size=600))
@FUZZ
def test_random_authenticated_bodies_only_raise_bad_message(body: bytes) -> None:
    with contextlib.suppress(BadMessage):
        decode(sign(body), KEY, rs(), NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=4),
    max_leaves=12)


@given(st.dictionaries(st.sampled_from(["p", "m", "b", "s", "t", "st", "h", "w", "l", "d"]),
                       json_values))
@FUZZ
def test_random_authenticated_json_only_raises_bad_message(changes: dict[str, Any]) -> None:
    body = {**json.loads(encode(hb(), KEY)[len(HEADER):-32]), **changes}
    try:
        msg = decode(sign(json.dumps(body).encode()), KEY, rs(), NOW)
    except BadMessage:
        return
    assert isinstance(msg, Heartbeat)


@given(st.data())
@FUZZ
def test_bit_flips_and_truncations_of_valid_messages(data: st.DataObject) -> None:
    msg = hb(data.draw(st.integers(1, 2**40)))
    valid = encode(msg, KEY)
    bit = data.draw(st.integers(0, len(valid) * 8 - 1))
    flipped = bytearray(valid)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert reason(bytes(flipped)) in ("forged", "malformed")
    cut = data.draw(st.integers(0, len(valid) - 1))
    assert reason(valid[:cut]) in ("forged", "malformed")
    assert decode(valid, KEY, rs(), NOW) == msg
