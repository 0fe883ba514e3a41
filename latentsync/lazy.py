"""Lazy package exports (PEP 562): a package names what it offers, and each name's module is imported on first use.

This keeps `import latentsync.cli` and the input checks free of torch, diffusers and the detectors, so a bad input
is reported in well under a second.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports `exports[name]` (a relative module name) on first access."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # later lookups find it directly
        return value

    return __getattr__
