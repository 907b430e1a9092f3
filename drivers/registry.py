"""Backend lookup shared by the driver kinds (python-can's ``interfaces/`` style).

Each kind's package has one ``BACKENDS`` dict, config string -> (module, class name), and
one ``open_*`` factory that calls :func:`backend_class`: a backend's module (and whatever
it needs, alsaaudio or numpy) is imported only when that backend is chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TypeVar, cast

Backends = Mapping[str, tuple[str, str]]

T = TypeVar("T")


def backend_class(kind: str, backends: Backends, name: str,
                  base: Callable[..., T]) -> type[T]:
    """The class registered as ``name``, which must be a subclass of ``base`` (typed as a
    callable: mypy refuses abstract classes as ``type[T]`` arguments); ValueError listing
    the choices when unknown."""
    try:
        module_name, class_name = backends[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; expected one of "
                         f"{', '.join(backends)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and isinstance(base, type) and issubclass(cls, base)):
        raise TypeError(f"{module_name}.{class_name} is not a {getattr(base, '__name__', base)}")
    return cast("type[T]", cls)


def backend_for_spec(kind: str, backends: Backends, targets: Mapping[str, str], spec: str,
                     base: Callable[..., T]) -> tuple[type[T], str]:
    """The class and the target of a ``<backend>:<target>`` config string (``targets``
    names what follows the colon for each backend); ValueError saying what is expected."""
    backend, _, target = spec.partition(":")
    if backend not in backends:
        raise ValueError(f"unknown {kind} {spec!r}; expected one of "
                         f"{', '.join(f'{name}:<{targets[name].lower()}>' for name in backends)}")
    if not target:
        raise ValueError(f"{kind} {spec!r} needs a {targets[backend]}")
    return backend_class(kind, backends, backend, base), target
