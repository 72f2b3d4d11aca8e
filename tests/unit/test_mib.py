"""MINISFT-MIB: lint-clean SMIv2, resolvable by net-snmp, and in step with the compiled copy
(minisft/snmp/mibs/MINISFT-MIB.py) and the OID table in minisft/snmp/oids.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from minisft.core.events import EventKind
from minisft.snmp import oids
from tests.support.snmpd import without_first_run_notice

REPO = Path(__file__).resolve().parents[2]
MIB = REPO / "mibs" / "MINISFT-MIB.txt"
IETF = REPO / "mibs" / "ietf"
COMPILED = REPO / "minisft" / "snmp" / "mibs" / "MINISFT-MIB.py"


def dotted(oid: tuple[int, ...]) -> str:
    return "." + ".".join(map(str, oid))


def snmptranslate(*args: str) -> subprocess.CompletedProcess[str]:
    """snmptranslate on our MIB; its stderr holds only what it says of the MIB."""
    env = {k: v for k, v in os.environ.items() if k not in ("MIBS", "MIBDIRS")}
    done = subprocess.run(["snmptranslate", "-M", f"+{REPO / 'mibs'}:{IETF}", "-m",
                           "MINISFT-MIB", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO)
    done.stderr = without_first_run_notice(done.stderr)
    return done


@pytest.mark.skipif(shutil.which("smilint") is None, reason="libsmi smilint not installed")
def test_smilint_level_6_prints_nothing() -> None:
    done = subprocess.run(["smilint", "-l", "6", str(MIB)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SMIPATH": f"{IETF}:{REPO / 'mibs'}"})
    assert done.stdout + done.stderr == ""
    assert done.returncode == 0


def test_ietf_modules_we_import_are_shipped() -> None:
    text = MIB.read_text()
    imports = text[text.index("IMPORTS"):text.index(";", text.index("IMPORTS"))]
    modules = set(re.findall(r"FROM\s+([A-Za-z0-9-]+)", imports))
    assert modules == {"SNMPv2-SMI", "SNMPv2-TC", "SNMPv2-CONF", "SNMP-FRAMEWORK-MIB",
                       "INET-ADDRESS-MIB"}
    for module in modules:
        assert (IETF / f"{module}.txt").is_file(), module


def test_documentation_pen_and_revisions() -> None:
    text = MIB.read_text()
    assert "::= { enterprises 32473 }" in text
    assert "RFC 5612" in text and "placeholder" in text
    last_updated = re.search(r'LAST-UPDATED\s+"(\d{12}Z)"', text)
    revisions = re.findall(r'REVISION\s+"(\d{12}Z)"', text)
    assert last_updated and revisions and last_updated.group(1) == max(revisions)


@pytest.mark.skipif(shutil.which("snmptranslate") is None, reason="net-snmp not installed")
def test_snmptranslate_resolves_every_notification_and_object() -> None:
    names = [name for _, name in oids.NOTIFICATION.values()]
    objects = {**{n: (*oids.NODE, i) for n, i in oids.NODE_SCALARS.items()},
               **{n: (*oids.MONITOR_ENTRY, i) for n, i in oids.MONITOR_COLUMNS.items()},
               **{n: (*oids.EVENT, i) for n, i in oids.EVENT_OBJECTS.items()},
               **{n: (*oids.POOL_ADDRESS_ENTRY, i)
                  for n, i in oids.POOL_ADDRESS_COLUMNS.items()}}
    args = [f"MINISFT-MIB::{n}" for n in [*names, *objects]]
    done = snmptranslate("-On", *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    got = done.stdout.split()
    expected = [dotted(oids.notification_oid(k)) for k in oids.NOTIFICATION]
    expected += [dotted(oid) for oid in objects.values()]
    assert got == expected
    for kind in EventKind:  # and back: the OID a receiver sees names the right kind
        back = snmptranslate(dotted(oids.notification_oid(kind)))
        assert back.stdout.strip() == f"MINISFT-MIB::{oids.NOTIFICATION[kind][1]}"


def test_notifications_under_zero_arc_map_to_v1_traps() -> None:
    for kind in EventKind:
        oid = oids.notification_oid(kind)
        assert oid[:-1] == (*oids.MINISFT_MIB, 0)  # RFC 3584 3.2: enterprise + 0 + specific


def _builder() -> Any:
    from pysnmp.smi import builder

    mib = builder.MibBuilder()
    mib.add_mib_sources(builder.DirMibSource(str(COMPILED.parent)))
    mib.load_modules("MINISFT-MIB")
    return mib


def test_compiled_copy_matches_oid_table() -> None:
    """pysmi-free check: the shipped compiled MIB has every name at the expected OID and
    every notification carries the varbinds the sink sends."""
    mib = _builder()

    def oid_of(name: str) -> tuple[int, ...]:
        (node,) = mib.import_symbols("MINISFT-MIB", name)
        return tuple(node.getName())

    for kind, (_, name) in oids.NOTIFICATION.items():
        assert oid_of(name) == oids.notification_oid(kind)
        (node,) = mib.import_symbols("MINISFT-MIB", name)
        assert [o for _, o in node.getObjects()] == list(oids.varbinds_for(kind)), name
    for name, sub in oids.NODE_SCALARS.items():
        assert oid_of(name) == (*oids.NODE, sub)
    for name, sub in oids.MONITOR_COLUMNS.items():
        assert oid_of(name) == (*oids.MONITOR_ENTRY, sub)
    for name, sub in oids.EVENT_OBJECTS.items():
        assert oid_of(name) == (*oids.EVENT, sub)
    for name, sub in oids.POOL_ADDRESS_COLUMNS.items():
        assert oid_of(name) == (*oids.POOL_ADDRESS_ENTRY, sub)


def test_enumerations_match_oids_module() -> None:
    mib = _builder()

    def enum(obj: str) -> dict[str, int]:
        (node,) = mib.import_symbols("MINISFT-MIB", obj)
        return {str(k): int(v) for k, v in node.getSyntax().namedValues.items()}

    assert enum("minisftMonitorState") == oids.MONITOR_STATE
    assert enum("minisftEventNewState") == oids.MONITOR_STATE
    assert enum("minisftMonitorLooksAlive") == oids.HEALTH
    assert enum("minisftMonitorIsAlive") == oids.CHECK_RESULT
    assert enum("minisftMonitorRole") == oids.ROLE
    assert enum("minisftMonitorHolder") == oids.HOLDER
    assert enum("minisftPoolAddressState") == oids.PLACEMENT_STATE
    from minisft.core.events import Severity

    assert enum("minisftEventSeverity") == {s.label: int(s) for s in Severity}


def test_compiled_copy_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("pysmi", reason="pysmi (the MIB compiler) is a development tool")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "compile-mib"), "--output",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fresh = (tmp_path / "MINISFT-MIB.py").read_text()
    assert fresh == COMPILED.read_text(), "run scripts/compile-mib and commit the result"
