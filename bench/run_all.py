"""Runs the benchmarks in bench/ and writes their results into docs/benchmarks.md.

A benchmark is a module ``bench/bench_<what>.py`` with a ``main()`` that runs it; run as
``python -m bench.bench_<what>`` it prints its markdown section (``## ...``) on stdout.
Each bench runs in its own process, exactly as it runs alone (a bench may pin its CPU
affinity or parse arguments, and leaves nothing behind in the next one); what it prints
becomes its section, given a heading and the run facts if it printed none. Each section
sits between markers in the document, so a run of some benchmarks replaces their
sections and leaves the others as they were; the introduction (method, machine, date)
is rewritten on every run. The document is written after each benchmark, so an
interrupted run keeps what it measured.

Run: ``.venv/bin/python -m bench.run_all [bench_<what> ...]`` (all when none is named)
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from bench.common import REPO, BenchRun, command_line, load_average, machine_description

DOC = REPO / "docs" / "benchmarks.md"
BENCH_DIR = Path(__file__).resolve().parent
BENCH_TIMEOUT_S = 900

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
    """The bench modules in bench/ that define a ``main()``."""
    return sorted(path.stem for path in BENCH_DIR.glob("bench_*.py")
                  if any(isinstance(node, ast.FunctionDef) and node.name == "main"
                         for node in ast.parse(path.read_text(encoding="utf-8")).body))


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


def python_command() -> str:
    """This interpreter, relative to the repository when it is the project's venv."""
    interpreter = Path(sys.executable)
    return str(interpreter.relative_to(REPO)) if interpreter.is_relative_to(REPO) \
        else str(interpreter)


def run_bench(name: str) -> tuple[str, bool]:
    """The markdown section of bench ``name`` and whether it ran to the end."""
    command = f"{python_command()} -m bench.{name}"
    run = BenchRun(name, name, command)
    try:
        done = subprocess.run(command.split(), cwd=REPO, stdout=subprocess.PIPE,
                              text=True, timeout=BENCH_TIMEOUT_S, check=False,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        return run.section(f"Failed: did not finish within {BENCH_TIMEOUT_S} s."), False
    printed = done.stdout.strip()
    if done.returncode != 0:
        return run.section(f"Failed: exit status {done.returncode} (its stderr went to the "
                           f"console of `{command_line()}`).\n\n```\n{printed}\n```"), False
    if printed.startswith("## "):
        return printed + "\n", True
    return run.section(printed), True


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
