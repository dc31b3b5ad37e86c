"""visionbench: how fast a server classifies images, at FP32, BF16 and INT8, on several engines.

The Python API (``visionbench.api``) is reachable from here: ``visionbench.run(...)``,
``visionbench.load(path)``, ... It is imported on first use, so that importing a part of
visionbench (the results store, say) never imports an engine or the report. No subpackage is
named as an API function (the report's is ``reporting``, the Ray fleet's ``ray_fleet``; the
registries are listed by ``list_engines`` and ``list_models``): Python binds a subpackage's name
on this package when it is imported, which would shadow the function."""

from typing import Any

from visionbench.version import __version__

#: The API's functions, importable from the package itself (``visionbench.api.__all__``).
API = ("accuracy", "cache_dir", "cache_entries", "clear_cache", "compare", "default_output",
       "dry_run", "export", "fleet", "fleet_summary", "is_fleet", "list_engines", "list_models", "load",
       "loadtest", "mlperf", "pipeline", "profile", "recover", "report", "report_fleet", "resume",
       "run", "serve", "study_config", "suite", "sweep", "system", "tune", "write_comparison")
__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        from visionbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'visionbench' has no attribute '{name}'")
