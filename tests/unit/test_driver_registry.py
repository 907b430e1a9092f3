"""The drivers' BACKENDS registries: every entry names a backend of its kind, backends are
imported only when chosen, and an unknown name lists the choices."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import drivers.amplifier
import drivers.audio
import drivers.mixer
import drivers.power
import drivers.sdr
from drivers.amplifier.base import Amplifier
from drivers.audio.base import AudioOutput
from drivers.mixer.base import Mixer
from drivers.power.base import MainsSensor
from drivers.registry import Backends, backend_class
from drivers.sdr.base import FmReceiver
from tests.support.agentproc import REPO

KINDS: list[tuple[Backends, type]] = [
    (drivers.amplifier.BACKENDS, Amplifier),
    (drivers.audio.BACKENDS, AudioOutput),
    (drivers.mixer.BACKENDS, Mixer),
    (drivers.power.BACKENDS, MainsSensor),
    (drivers.sdr.BACKENDS, FmReceiver),
]


@pytest.mark.parametrize(("backends", "base"), KINDS, ids=[base.__name__ for _, base in KINDS])
def test_every_registered_backend_is_a_backend_of_its_kind(backends: Backends,
                                                           base: type) -> None:
    for name in backends:
        assert issubclass(backend_class("backend", backends, name, base), base)


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown amplifier backend 'relay'; expected one "
                                         r"of gpio, sim, none"):
        backend_class("amplifier backend", drivers.amplifier.BACKENDS, "relay", Amplifier)


def test_a_registry_entry_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="is not a Mixer"):
        backend_class("mixer", {"x": ("drivers.amplifier.none", "NoAmplifier")}, "x", Mixer)


def test_importing_the_factories_loads_no_backend() -> None:
    """numpy (the demodulator) and alsaaudio load only with a backend that needs them."""
    code = ("import sys, drivers.amplifier, drivers.audio, drivers.mixer, drivers.power, "
            "drivers.sdr; print(sorted(m for m in ('numpy', 'alsaaudio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_backends_never_import_their_package() -> None:
    """A backend module imports its kind's base module, not the package whose factory
    imports it (the drivers.mixer cycle)."""
    offenders = []
    for module in sorted((REPO / "drivers").glob("*/*.py")):
        package = f"drivers.{module.parent.name}"
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == package:
                offenders.append(str(module.relative_to(REPO)))
    assert offenders == []
