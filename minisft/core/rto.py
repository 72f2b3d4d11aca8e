"""How long a LooksAlive ping waits for its reply: an RFC 6298 retransmission timeout.

A fixed timeout must cover the worst round trip anyone might see, so on a LAN (replies in
well under a millisecond) it makes every miss cost far more than it needs to, and the
detection time `interval + retry x timeout` is mostly waiting. TCP (RFC 6298) and BFD
instead time out on what they measured: the smoothed round-trip time plus four times its
mean deviation. Here that estimate is floored (a loaded host answers a few milliseconds
late now and then, and a reply that is late is not a dead host) and capped at the
configured `timeout`, which stays the longest any ping waits.

A missed ping doubles the timeout for the next one (RFC 6298 5.5), up to the cap, so a
holder that only got slow is not declared dead on a too-short estimate; the next measured
reply sets it back to the estimate. A miss alone never causes a takeover anyway: that needs
`retry` misses and an unanswered ARP/NDP probe round (`minisft.core.monitor`).

Pure code: no clock, no I/O; the monitor machine owns one estimator per watched address.
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 1 / 8  # RFC 6298 2.3: gain of the smoothed RTT
BETA = 1 / 4  # gain of the RTT variation
K = 4  # deviations added to the smoothed RTT
RTO_FLOOR = 0.005  # seconds: the shortest a ping ever waits (scheduling jitter of a busy host)
MAX_BACKOFFS = 16  # 2**16 x the floor is over 5 minutes: past any cap


@dataclass
class RtoEstimator:
    srtt: float | None = None  # smoothed RTT, seconds; None until the first reply
    rttvar: float = 0.0  # RTT variation, seconds
    backoffs: int = 0  # misses since the last measured reply

    def sample(self, rtt: float) -> None:
        """A reply came back after `rtt` seconds (RFC 6298 2.2 and 2.3)."""
        rtt = max(0.0, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self.backoffs = 0

    def missed(self) -> None:
        """A ping went unanswered: back off (RFC 6298 5.5) until the next reply."""
        self.backoffs = min(self.backoffs + 1, MAX_BACKOFFS)

    def timeout(self, cap: float) -> float:
        """How long the next ping waits: the estimate, floored, backed off, capped at `cap`
        (the configured timeout). Before the first reply there is nothing to go on: `cap`."""
        if self.srtt is None:
            return cap
        estimate = max(RTO_FLOOR, self.srtt + K * self.rttvar)
        return min(cap, estimate * float(2 ** self.backoffs))
