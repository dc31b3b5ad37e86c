"""Commands about this machine and its cache rather than a measurement: sysinfo, engines,
models, cache, export (registered on the group by ``cli.main``)."""

from __future__ import annotations

from pathlib import Path

import click

from visionbench import api
from visionbench.cli import tables
from visionbench.cli.options import EXPORT, options
from visionbench.cli.running import confirmed, console


@click.command()
@click.option("--tune", "how", flag_value="tune", help="Set the performance governor and huge "
              "pages madvise where root may (nothing of yours stopped), saving what was there.")
@click.option("--reset", "how", flag_value="reset", help="Put back what --tune changed.")
@click.option("--peak", "how", flag_value="peak", help="Measure the peak per precision again.")
def sysinfo(how: str | None) -> None:
    """Print the system facts, the machine's state (judged, with advice) and its peak per precision."""
    if how in ("tune", "reset"):
        return tables.print_changes(console, *api.tune_machine(reset=how == "reset"), how == "reset")
    tables.print_system(console, api.system())
    tables.print_state(console, *api.machine_state())
    tables.print_peak(console, api.machine_peak(refresh=how == "peak"))


@click.command()
def engines() -> None:
    """List engines, their versions, and per precision whether this CPU runs it natively."""
    tables.print_engines(console, api.list_engines())


@click.command()
def models() -> None:
    """List the built-in models: task, parameters, GFLOPs, input, weights, engines that run each."""
    tables.print_models(console, api.list_models(), api.list_engines())


@click.command()
@click.option("--clear", is_flag=True, help="Delete the cached models (built again on next use); "
              "asks first on a terminal.")
@click.option("--yes", is_flag=True, help="Confirm --clear without asking.")
def cache(clear: bool, yes: bool) -> None:
    """List the cached models, INT8 models and exports (size, what, when made, whole or damaged),
    or delete them."""
    if clear:
        freed = confirmed(lambda ok: api.clear_cache(yes=yes or ok), lambda: tables.cache_question(
            str(api.cache_dir()), api.cache_entries()))
        console.print(f"cleared {api.cache_dir()}: {freed / 2**20:.1f} MiB freed", markup=False)
        return
    tables.print_cache(console, str(api.cache_dir()), api.cache_entries())


@click.command()
@options(EXPORT)
def export(output: Path, model: str, weights: Path | None, seed: int, overwrite: bool) -> None:
    """Write a built-in model as ONNX, so other tools and engines run the very same file."""
    path = api.export(model, output, weights=weights, seed=seed, overwrite=overwrite)
    console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)", markup=False)


COMMANDS = (sysinfo, engines, models, cache, export)
