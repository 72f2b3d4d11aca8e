"""The files the Debian package installs that an admin edits or reads first: the example
/etc/minisft/minisft.yaml must be valid as shipped and once its commented examples are
switched on (the package itself: tests/integration/test_package.py)."""

from __future__ import annotations

from pathlib import Path

from minisft.config.loader import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "packaging" / "deb" / "minisft.yaml"


def test_example_config_is_valid_as_shipped() -> None:
    config = load_config(EXAMPLE)
    assert config.monitors == ()  # watches nothing until the admin adds a monitor


def test_example_config_is_valid_with_its_commented_examples_on(tmp_path: Path) -> None:
    """Below `monitors: []`, uncomment the monitor and the SNMP target (YAML after '#', not
    '# ' prose) as the file invites to: the result is a valid one-monitor config."""
    community = tmp_path / "snmp-community"
    community.write_text("minisft-traps\n")
    community.chmod(0o600)
    lines = []
    examples = False
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("monitors: []"):
            line, examples = "monitors:", True
        elif examples and line.startswith(("#  ", "#alerting")):
            line = line[1:]
        lines.append(line.replace("/etc/minisft/snmp-community", str(community)))
    edited = tmp_path / "minisft.yaml"
    edited.write_text("\n".join(lines) + "\n")
    config = load_config(edited)
    assert [m.name for m in config.monitors] == ["web"]
    assert [t.host for t in config.alerting.snmp_targets] == ["192.0.2.100"]
