"""SNMP support: the MIB's OID layout (`oids`), the pysnmp-compiled MINISFT-MIB (`mibs/`,
loaded by minisft.sinks.snmp) and the net-snmp pass_persist helper (`passpersist`)."""

from pathlib import Path

# MINISFT-MIB as text, with the IETF modules it imports (Debian's net-snmp no longer ships
# them), for net-snmp tools (`-M`): shipped in the wheel and the .deb, so an installed
# `minisft demo` finds them as a git checkout does (there they link to mibs/).
MIB_TEXT_DIRS = (Path(__file__).resolve().parent / "asn1",
                 Path(__file__).resolve().parent / "asn1" / "ietf")
