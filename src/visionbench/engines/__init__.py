"""Engine registry: every module in this package that defines an ``Engine`` subclass."""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field

from visionbench.engines.base import (
    Engine,
    EngineOption,
    Session,
    SessionSpec,
    Support,
)
from visionbench.errors import VisionbenchError
from visionbench.settings import DEFAULT_ENGINE, PRECISIONS, Precision
from visionbench.sysinfo import cpu_features

__all__ = ["DEFAULT_ENGINE", "PRECISIONS", "Engine", "EngineInfo", "EngineOption", "Precision", "Session",
           "SessionSpec", "Support", "all_engines", "all_options", "catalog", "get_engine"]
#: Set (a JSON object of its settings, or 1), this adds ``visionbench.testing.fake_engine``'s
#: engine ``fake``, in every process of a run (workers inherit it).
FAKE_ENGINE = "VISIONBENCH_FAKE_ENGINE"


def all_engines() -> dict[str, type[Engine]]:
    """Known engines by name, installed or not (engine modules import their library lazily)."""
    found: dict[str, type[Engine]] = {}
    modules = [f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)
               if info.name != "base"]
    if FAKE_ENGINE in os.environ:
        modules.append("visionbench.testing.fake_engine")
    for name in modules:
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            # Only concrete engines carry a name; shared bases (e.g. _Torch) do not.
            if isinstance(obj, type) and issubclass(obj, Engine) and "name" in vars(obj):
                found[obj.name] = obj
    return dict(sorted(found.items()))


def all_options() -> dict[str, tuple[EngineOption, list[str]]]:
    """Every engine's own options by name, with the engines that declare each."""
    out: dict[str, tuple[EngineOption, list[str]]] = {}
    for name, cls in all_engines().items():
        for opt in cls.options:
            out.setdefault(opt.name, (opt, []))[1].append(name)
    return out


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


@dataclass(frozen=True)
class EngineInfo:
    """An engine as this machine has it: installed or not, its versions, and per precision
    whether this CPU runs it natively."""

    name: str
    extra: str
    installed: bool
    #: What it runs of an ONNX model: the graph, or the model rebuilt in torch or keras.
    definition: str
    versions: dict[str, str] = field(default_factory=dict)
    support: dict[str, Support] = field(default_factory=dict)

    @property
    def install(self) -> str:
        return f"pip install 'visionbench[{self.extra}]'"


def catalog() -> list[EngineInfo]:
    """Every known engine, installed or not."""
    cpu = cpu_features()
    out = []
    for name, cls in all_engines().items():
        if not cls.installed():
            out.append(EngineInfo(name, cls.extra, False, cls.definition))
            continue
        e = cls()
        out.append(EngineInfo(name, cls.extra, True, cls.definition, e.versions(),
                              {p: e.support(p, cpu) for p in PRECISIONS}))
    return out
