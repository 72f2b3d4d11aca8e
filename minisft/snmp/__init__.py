"""SNMP support: the MIB's OID layout (`oids`), the pysnmp-compiled MINISFT-MIB (`mibs/`,
loaded by minisft.sinks.snmp) and the net-snmp pass_persist helper (`passpersist`)."""
