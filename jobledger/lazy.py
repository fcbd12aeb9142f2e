"""Package exports imported on first use (PEP 562 module ``__getattr__``).

``import jobledger`` must stay cheap and must not pull in Redis, Alembic or Rich:
a CLI command, or a program that only needs :class:`jobledger.errors.LedgerError`,
should load only what it uses. A package lists which of its public names live in
which module; the first ``from jobledger import Ledger`` imports that module and
keeps the name, so later lookups are plain attribute reads. Type checkers see the
same names through ``if TYPE_CHECKING:`` imports in the package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping


def attribute(package: str, name: str, homes: Mapping[str, str]) -> object:
    """``package``'s attribute ``name``: an export from its home module, or a submodule.

    Submodules load on access too, so ``import jobledger`` then ``jobledger.audit.verify``
    keeps working now that the package no longer imports ``audit`` as a side effect.
    """
    home = homes.get(name)
    if home is not None:
        value: object = getattr(importlib.import_module(home, package), name)
    elif name.startswith("__"):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    else:
        value = _submodule(package, name)
    setattr(sys.modules[package], name, value)
    return value


def names(package: str, homes: Mapping[str, str]) -> list[str]:
    """What ``dir(package)`` lists: what is loaded so far, and every lazy export."""
    return sorted(set(vars(sys.modules[package])) | set(homes))


def _submodule(package: str, name: str) -> object:
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.{name}":
            raise  # the submodule exists; something it imports does not
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
