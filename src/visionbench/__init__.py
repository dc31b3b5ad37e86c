"""visionbench: how fast a server classifies images, at FP32, BF16 and INT8, on several engines.

The Python API (``visionbench.api``) is reachable from here: ``visionbench.run(...)``,
``visionbench.load(path)``, ... It is imported on first use, so that importing a part of
visionbench (the results store, say) never imports an engine or the report."""

import sys
from types import ModuleType
from typing import Any

from visionbench.version import __version__

#: The API's functions, importable from the package itself.
API = ("accuracy", "compare", "engines", "export", "fleet", "load", "mlperf", "models", "report",
       "run", "study_config", "sweep", "system", "tune")
__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        from visionbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'visionbench' has no attribute '{name}'")


class _Package(ModuleType):
    """This package's module. Importing a subpackage binds its name on the package, and two of
    them share a name with API functions (``visionbench.report``, ``visionbench.fleet``): after
    the first ``visionbench.report(run)``, which imports the report, the name meant the module.
    A subpackage is never bound over an API name (``from visionbench.report.html import ...``
    finds it in ``sys.modules``), so the name stays the function's."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in API and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
