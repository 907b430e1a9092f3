"""Runs the benchmarks in bench/ and writes their results into docs/benchmarks.md.

A benchmark is a module ``bench/bench_<what>.py`` whose ``main() -> str`` runs it and
returns its markdown section. Each section sits between markers in the document, so a
run of some benchmarks replaces their sections and leaves the others as they were; the
introduction (method, machine, date) is rewritten on every run. The document is written
after each benchmark, so an interrupted run keeps what it measured.

Run: ``.venv/bin/python -m bench.run_all [bench_<what> ...]`` (all when none is named)
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import sys
import traceback
from contextlib import redirect_stdout
from datetime import datetime
from pathlib import Path

from bench.common import REPO, command_line, load_average, machine_description

DOC = REPO / "docs" / "benchmarks.md"
BENCH_DIR = Path(__file__).resolve().parent

INTRO = """\
# Benchmarks

Speed and footprint of broadcast-agent, measured by the modules in `bench/` (never by
timing asserts in tests). Each section below names the exact command that produced it,
when it ran and the load average around the run. `.venv/bin/python -m bench.run_all`
runs every `bench/bench_*.py` and rewrites this file's sections;
`.venv/bin/python -m bench.run_all bench_decoder` reruns one and keeps the rest.

## Method
- The machine is shared with other engineers' test runs and is noisy, so timings are
  reported as percentiles (p50/p90/p99) over many samples, and CPU as a share of one
  core (CPU time / wall time), not as single durations. Read the load average of each
  section before comparing numbers between runs.
- Everything runs for real: the real agent process (`broadcast-agent run`) against the
  source simulator, real libvlc decoder worker processes, real HTTP on loopback. The only
  stand-in is the last inch of hardware: the clocked WAV sink (`wav:`, hil.md) as the
  sound card and the simulated amplifier.
- Memory and CPU come from /proc for the agent's whole process tree (see each section).
- This is not the target hardware: a Raspberry Pi class board is several times slower
  per core, so the ratios and the head-room against each target matter more than the
  absolute times.

## Machine
"""

_SECTION = re.compile(r"<!-- bench:(?P<name>\w+) -->\n.*?<!-- /bench:(?P=name) -->\n",
                      re.DOTALL)


def discover() -> list[str]:
    return sorted(path.stem for path in BENCH_DIR.glob("bench_*.py"))


def intro() -> str:
    return (f"<!-- intro -->\n{INTRO}{machine_description()}; this file last updated "
            f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by `{command_line()}` "
            f"(load average {load_average()} when it finished).\n<!-- /intro -->\n")


def with_section(document: str, name: str, section: str) -> str:
    """``document`` with the section of bench ``name`` replaced, or appended."""
    block = f"<!-- bench:{name} -->\n{section.rstrip()}\n<!-- /bench:{name} -->\n"
    for match in _SECTION.finditer(document):
        if match["name"] == name:
            return document[:match.start()] + block + document[match.end():]
    return document.rstrip("\n") + "\n\n" + block


def with_intro(document: str) -> str:
    _, marker, rest = document.partition("<!-- /intro -->\n")
    return intro() + "\n" + (rest if marker else document).lstrip("\n")


def run_bench(name: str) -> tuple[str, bool]:
    """The markdown section of bench ``name`` and whether it ran to the end."""
    module = importlib.import_module(f"bench.{name}")
    main = getattr(module, "main", None)
    if not callable(main):
        return f"## {name}\n\nNot run: bench/{name}.py has no `main()`.\n", False
    printed = io.StringIO()
    argv, sys.argv = sys.argv, [f"bench/{name}.py"]  # a bench parsing arguments sees none
    try:
        with redirect_stdout(printed):
            section = main()
    except Exception:
        return (f"## {name}\n\nFailed (`{command_line()}`):\n\n```\n"
                f"{traceback.format_exc()}```\n"), False
    finally:
        sys.argv = argv
    if isinstance(section, str):
        return section, True
    return (f"## {name}\n\n`main()` of bench/{name}.py returned no section; what it "
            f"printed (`{command_line()}`, load average after {load_average()}):\n\n"
            f"```\n{printed.getvalue()}```\n"), True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("benches", nargs="*", metavar="bench_<what>",
                        help="benches to run (default: every bench/bench_*.py)")
    args = parser.parse_args(argv)
    available = discover()
    unknown = sorted(set(args.benches) - set(available))
    if unknown:
        parser.error(f"no such bench: {', '.join(unknown)} (have: {', '.join(available)})")
    all_ran = True
    for name in args.benches or available:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        section, ran = run_bench(name)
        all_ran &= ran
        print(section, flush=True)
        document = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        DOC.write_text(with_intro(with_section(document, name, section)), encoding="utf-8")
    return 0 if all_ran else 1


if __name__ == "__main__":
    raise SystemExit(main())
