"""Fakes of the runtime's ports for tests (see fakes.py); not used by the daemon."""
