"""Nagios/Icinga integration: the `check_minisft` plugin.

Kept import-light on purpose: a monitoring server runs the plugin every few seconds for
many hosts, so nothing here may pull in the daemon's heavy dependencies.
"""
