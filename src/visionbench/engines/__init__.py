"""Engine registry: every module in this package that defines an ``Engine`` subclass."""

from __future__ import annotations

import importlib
import pkgutil

from visionbench.engines.base import PRECISIONS, Engine, Precision, Session, Support
from visionbench.errors import VisionbenchError

__all__ = ["PRECISIONS", "Engine", "Precision", "Session", "Support", "all_engines", "get_engine"]
DEFAULT_ENGINE = "openvino"


def all_engines() -> dict[str, type[Engine]]:
    """Known engines by name, installed or not (engine modules import their library lazily)."""
    found: dict[str, type[Engine]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(mod).values():
            # Only concrete engines carry a name; shared bases (e.g. _Torch) do not.
            if isinstance(obj, type) and issubclass(obj, Engine) and "name" in vars(obj):
                found[obj.name] = obj
    return dict(sorted(found.items()))


def get_engine(name: str) -> Engine:
    engines = all_engines()
    if name not in engines:
        raise VisionbenchError(f"unknown engine '{name}'; known: {', '.join(engines)}")
    cls = engines[name]
    if not cls.installed():
        raise VisionbenchError(
            f"engine '{name}' is not installed: pip install 'visionbench[{cls.extra}]'"
        )
    return cls()
