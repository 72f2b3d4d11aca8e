"""Write the man pages minisft(8) and check_minisft(8) and the bash completion of
`minisft` from the programs' own argparse parsers, so they say exactly what `--help` says
(scripts/build-deb runs this with the package's virtualenv python).

Usage: python generate.py OUTDIR    (writes minisft.8, check_minisft.8, minisft.bash)
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from minisft import __version__
from minisft.cli.main import _parser as minisft_parser
from minisft.nagios.plugin import build_parser as check_parser

FILES = """\
/etc/minisft/minisft.yaml
  the daemon's configuration (a commented example is installed)
/var/lib/minisft/
  state_dir: the event journal and status.json (read by check_minisft, minisft-snmp-pass)
/run/minisft/minisft.sock
  control_socket: where the commands status, release, claim, ... reach the daemon
/lib/systemd/system/minisft.service
  the systemd unit (enabled at install, not started)
/usr/share/snmp/mibs/MINISFT-MIB.txt
  the MIB of the SNMP notifications and of minisft-snmp-pass
/usr/share/doc/minisft/
  README, example configurations, the monitoring pack (alerting/)
"""


@dataclass(frozen=True)
class Page:
    name: str
    summary: str
    parser: argparse.ArgumentParser
    see_also: str


def roff_text(text: str) -> str:
    """Preformatted text as roff: escape backslashes and lines that roff reads as requests."""
    out = []
    for line in text.rstrip("\n").splitlines():
        line = line.replace("\\", "\\e")
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


Parsers = list[tuple[str, argparse.ArgumentParser]]


def subcommand_parsers(parser: argparse.ArgumentParser) -> Parsers:
    """Every subcommand, nested ones as "pool push", in the order of the help."""
    found: Parsers = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = subcommand_parsers(sub)
                if nested:
                    found.extend((f"{name} {n}", p) for n, p in nested)
                else:
                    found.append((name, sub))
    return found


def render(page: Page) -> str:
    date = os.environ.get("MANPAGE_DATE", "2026-12-04")
    name = page.name.replace("_", "\\_")
    parts = [
        f'.TH {name.upper()} 8 "{date}" "minisft {__version__}" "System Administration"',
        ".SH NAME",
        f"{name} \\- {page.summary}",
        ".SH SYNOPSIS",
        roff_text(" ".join(page.parser.format_usage().removeprefix("usage: ").split())),
        ".SH DESCRIPTION",
        ".nf",
        roff_text(page.parser.format_help().split("\n", 1)[1].lstrip("\n")),
        ".fi",
    ]
    subs = subcommand_parsers(page.parser)
    if subs:
        parts.append(".SH COMMANDS")
        for name, sub in subs:
            parts += [f".SS {name}", ".nf", roff_text(sub.format_help()), ".fi"]
    parts += [".SH FILES", ".nf", roff_text(FILES), ".fi",
              ".SH SEE ALSO", page.see_also,
              ".SH AUTHOR", "MiniSFT developers."]
    return "\n".join(parts) + "\n"


def options(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """`minisft <TAB>`: the commands; `minisft CMD <TAB>`: its options and actions; a file
    after --config/-c."""
    cases = []
    commands: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands.append(name)
                words = options(sub) + [n for n, _ in subcommand_parsers(sub)]
                cases.append(f"        {name}) words=\"{' '.join(words)}\" ;;")
    return f"""# bash completion for minisft(8); generated from its argparse parser
_minisft() {{
    local cur prev words
    cur=${{COMP_WORDS[COMP_CWORD]}}
    prev=${{COMP_WORDS[COMP_CWORD-1]}}
    if [ "$prev" = --config ] || [ "$prev" = -c ]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{' '.join(commands)} {' '.join(options(parser))}" -- "$cur"))
        return
    fi
    case "${{COMP_WORDS[1]}}" in
{chr(10).join(cases)}
        *) words="" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _minisft minisft
"""


def main(outdir: str) -> int:
    os.environ["COLUMNS"] = "80"  # argparse wraps to the terminal: make the pages stable
    pages = [
        Page("minisft", "IP failover daemon with a monitoring bridge", minisft_parser(),
             "check_minisft(8), snmpd(8), snmptrapd(8), systemctl(1)"),
        Page("check_minisft", "Nagios/Icinga plugin for a MiniSFT node", check_parser(),
             "minisft(8), nagios4(8), icinga2(8)"),
    ]
    for page in pages:
        Path(outdir, f"{page.name}.8").write_text(render(page), encoding="utf-8")
    Path(outdir, "minisft.bash").write_text(bash_completion(pages[0].parser), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
