"""The OID layout of MINISFT-MIB as plain Python data (no pysnmp: the pass_persist helper
must start fast).

mibs/MINISFT-MIB.txt is the contract; tests/unit/test_mib.py checks that this module and
the compiled copy (minisft/snmp/mibs/MINISFT-MIB.py) agree with it. Numbers, once
published, never change: new kinds get new numbers at the end.

32473 is the documentation PEN of RFC 5612. It is a placeholder: replace it (here, in the
MIB, in the compiled copy, and in snmpd.conf examples) once a PEN is registered.
"""

from __future__ import annotations

from minisft.core.events import EventKind

ENTERPRISE = (1, 3, 6, 1, 4, 1, 32473)  # RFC 5612 documentation PEN: replace once registered
MINISFT_MIB = ENTERPRISE  # minisftMIB, the MODULE-IDENTITY (smilint-clean: no implicit node)

NOTIFICATIONS = (*MINISFT_MIB, 0)  # under .0 so each maps to an SNMPv1 trap (RFC 3584)
OBJECTS = (*MINISFT_MIB, 1)
NODE = (*OBJECTS, 1)  # the node scalars
MONITOR_TABLE = (*OBJECTS, 2)
MONITOR_ENTRY = (*MONITOR_TABLE, 1)
EVENT = (*OBJECTS, 3)  # accessible-for-notify varbinds
POOL_ADDRESS_TABLE = (*OBJECTS, 4)
POOL_ADDRESS_ENTRY = (*POOL_ADDRESS_TABLE, 1)
CONFORMANCE = (*MINISFT_MIB, 2)

# Node scalars: (sub-id under NODE, descriptor).
NODE_SCALARS: dict[str, int] = {
    "minisftNodeName": 1,
    "minisftNodeSoftwareVersion": 2,
    "minisftNodeStartTime": 3,
    "minisftNodeUptime": 4,
    "minisftNodeMonitorCount": 5,
    "minisftNodeLastEventSeq": 6,
    "minisftNodeStatusAge": 7,
    "minisftNodeLinkUp": 8,
}

# Monitor table columns (1 is the not-accessible index).
MONITOR_COLUMNS: dict[str, int] = {
    "minisftMonitorIndex": 1,
    "minisftMonitorName": 2,
    "minisftMonitorAddressType": 3,
    "minisftMonitorAddress": 4,
    "minisftMonitorPrefixLength": 5,
    "minisftMonitorRole": 6,
    "minisftMonitorState": 7,
    "minisftMonitorPaused": 8,
    "minisftMonitorHolder": 9,
    "minisftMonitorHolderMac": 10,
    "minisftMonitorLooksAlive": 11,
    "minisftMonitorLooksAliveRtt": 12,
    "minisftMonitorIsAlive": 13,
    "minisftMonitorIsAliveLatency": 14,
    "minisftMonitorServiceDead": 15,
    "minisftMonitorPeerHealth": 16,
    "minisftMonitorTakeovers": 17,
    "minisftMonitorConflicts": 18,
    "minisftMonitorLastChange": 19,
    "minisftMonitorReason": 20,
}

# Pool address table columns (1 is the not-accessible index).
POOL_ADDRESS_COLUMNS: dict[str, int] = {
    "minisftPoolAddressIndex": 1,
    "minisftPoolAddressPool": 2,
    "minisftPoolAddressType": 3,
    "minisftPoolAddress": 4,
    "minisftPoolAddressPrefixLength": 5,
    "minisftPoolAddressOwner": 6,
    "minisftPoolAddressPreferredOwner": 7,
    "minisftPoolAddressState": 8,
    "minisftPoolAddressOnPreferred": 9,
    "minisftPoolAddressMoves": 10,
}

# Notification varbind objects (accessible-for-notify).
EVENT_OBJECTS: dict[str, int] = {
    "minisftEventSeq": 1,
    "minisftEventKind": 2,
    "minisftEventSeverity": 3,
    "minisftEventTime": 4,
    "minisftEventNode": 5,
    "minisftEventReason": 6,
    "minisftEventMonitor": 7,
    "minisftEventAddressType": 8,
    "minisftEventAddress": 9,
    "minisftEventNewState": 10,
    "minisftEventPeerMac": 11,
}

# One NOTIFICATION-TYPE per EventKind: (sub-id under NOTIFICATIONS, descriptor).
NOTIFICATION: dict[EventKind, tuple[int, str]] = {
    EventKind.DAEMON_STARTED: (1, "minisftDaemonStarted"),
    EventKind.DAEMON_STOPPING: (2, "minisftDaemonStopping"),
    EventKind.CONFIG_RELOADED: (3, "minisftConfigReloaded"),
    EventKind.CONFIG_REJECTED: (4, "minisftConfigRejected"),
    EventKind.TEST_ALERT: (5, "minisftTestAlert"),
    EventKind.LOOKSALIVE_UP: (6, "minisftLooksAliveUp"),
    EventKind.LOOKSALIVE_DOWN: (7, "minisftLooksAliveDown"),
    EventKind.LOOKSALIVE_DEGRADED: (8, "minisftLooksAliveDegraded"),
    EventKind.SERVICE_DEAD: (9, "minisftServiceDead"),
    EventKind.SERVICE_RECOVERED: (10, "minisftServiceRecovered"),
    EventKind.TAKEOVER: (11, "minisftTakeover"),
    EventKind.TAKEOVER_FAILED: (12, "minisftTakeoverFailed"),
    EventKind.CLAIMED: (13, "minisftClaimed"),
    EventKind.ADOPTED: (14, "minisftAdopted"),
    EventKind.RELEASED: (15, "minisftReleased"),
    EventKind.FALLBACK: (16, "minisftFallback"),
    EventKind.YIELDED: (17, "minisftYielded"),
    EventKind.ADDRESS_IN_USE: (18, "minisftAddressInUse"),
    EventKind.ADDRESS_CONFLICT: (19, "minisftAddressConflict"),
    EventKind.CONFLICT_CLEARED: (20, "minisftConflictCleared"),
    EventKind.ADDRESS_REMOVED: (21, "minisftAddressRemoved"),
    EventKind.PEER_UP: (22, "minisftPeerUp"),
    EventKind.PEER_DOWN: (23, "minisftPeerDown"),
    EventKind.PAUSED: (24, "minisftPaused"),
    EventKind.RESUMED: (25, "minisftResumed"),
    EventKind.LINK_DOWN: (26, "minisftLinkDown"),
    EventKind.LINK_UP: (27, "minisftLinkUp"),
    EventKind.MEMBER_LOST: (28, "minisftMemberLost"),
    EventKind.MEMBER_BACK: (29, "minisftMemberBack"),
    EventKind.ADDRESS_MOVED: (30, "minisftAddressMoved"),
    EventKind.CONFIG_DRIFT: (31, "minisftConfigDrift"),
    EventKind.ISOLATED: (32, "minisftIsolated"),
    EventKind.REJOINED: (33, "minisftRejoined"),
    EventKind.LEASE_LOST: (34, "minisftLeaseLost"),
    EventKind.STATE_DIR_FAILING: (35, "minisftStateDirFailing"),
    EventKind.HOOK_FAILED: (36, "minisftHookFailed"),
    EventKind.SWITCHOVER: (37, "minisftSwitchover"),
}
assert set(NOTIFICATION) == set(EventKind), "every event kind needs a notification"

# The varbinds each notification carries, in OBJECTS order. Node-wide events have no
# monitor; events about another host's MAC also carry it.
NODE_VARBINDS = ("minisftEventSeq", "minisftEventKind", "minisftEventSeverity",
                 "minisftEventTime", "minisftEventNode", "minisftEventReason")
MONITOR_VARBINDS = (*NODE_VARBINDS, "minisftEventMonitor", "minisftEventAddressType",
                    "minisftEventAddress", "minisftEventNewState")
MAC_VARBINDS = (*MONITOR_VARBINDS, "minisftEventPeerMac")

NODE_KINDS = frozenset({EventKind.DAEMON_STARTED, EventKind.DAEMON_STOPPING,
                        EventKind.CONFIG_RELOADED, EventKind.CONFIG_REJECTED,
                        EventKind.TEST_ALERT, EventKind.STATE_DIR_FAILING})
MAC_KINDS = frozenset({EventKind.YIELDED, EventKind.ADDRESS_IN_USE,
                       EventKind.ADDRESS_CONFLICT, EventKind.SWITCHOVER})


def varbinds_for(kind: EventKind) -> tuple[str, ...]:
    if kind in NODE_KINDS:
        return NODE_VARBINDS
    if kind in MAC_KINDS:
        return MAC_VARBINDS
    return MONITOR_VARBINDS


def notification_oid(kind: EventKind) -> tuple[int, ...]:
    return (*NOTIFICATIONS, NOTIFICATION[kind][0])


def event_object_oid(name: str) -> tuple[int, ...]:
    return (*EVENT, EVENT_OBJECTS[name])


# Enumerations shared by the MIB's TEXTUAL-CONVENTIONs, the sink and the pass_persist helper.
MONITOR_STATE = {"unknown": 0, "starting": 1, "watching": 2, "probing": 3, "binding": 4,
                 "holding": 5}
HEALTH = {"unknown": 1, "up": 2, "degraded": 3, "down": 4}
CHECK_RESULT = {"unknown": 1, "ok": 2, "failed": 3, "disabled": 4}
ROLE = {"primary": 1, "backup": 2}
HOLDER = {"unknown": 1, "self": 2, "other": 3, "none": 4}
PLACEMENT_STATE = {"unknown": 0, "held": 1, "free": 2, "probing": 3, "binding": 4,
                   "duplicate": 5}
TRUTH = {True: 1, False: 2}  # SNMPv2-TC TruthValue
INET_ADDRESS_TYPE = {"unknown": 0, "ipv4": 1, "ipv6": 2}
