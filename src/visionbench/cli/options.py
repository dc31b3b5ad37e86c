"""The command line's shared option groups, named as ``api.study_config`` takes them."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from visionbench.engines import all_options
from visionbench.errors import VisionbenchError
from visionbench.settings import (
    LADDER,
    REFERENCE_BATCH,
    RUN_NOISE_RATIO,
    Fleet,
    Inputs,
    Launch,
    Study,
    Timing,
    Tune,
)


def flags_of(*classes: type, group: str | None = None) -> list[Callable]:
    """The flags the dataclasses declare (``visionbench.flags.flag`` fields; with ``group``, those
    of that group), as click options: a list field takes a comma list, a bool is a switch, a
    path a click path, choices a click choice; the default shown is the command line's (its
    ``cli_default``, else the field's plain default)."""
    out = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if "help" not in meta or (group is not None and meta["group"] != group):
                continue
            hint = hints[f.name]
            kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint) \
                if isinstance(hint, types.UnionType) else hint
            kind = list if typing.get_origin(kind) is list else kind
            name = meta["flag"] or "--" + f.name.replace("_", "-")
            if meta.get("multiple"):  # repeated: its values, None where never given
                out.append(click.option(name, f.name, multiple=True, help=meta["help"],
                                        callback=lambda _c, _p, v: list(v) or None))
                continue
            if kind is bool:
                pair = {"default": f.default, "show_default": True} if "/" in name else {}
                out.append(click.option(name, f.name, is_flag=True, help=meta["help"], **pair))
                continue
            default = meta["cli_default"] if meta["cli_default"] is not dataclasses.MISSING \
                else f.default if f.default is not dataclasses.MISSING else None
            shown = {"default": default, "show_default": True} if default is not None else {}
            click_type = (click.Choice(meta["choices"]) if meta["choices"]
                          else click.Path(path_type=Path) if kind is Path
                          else str if kind is list else kind)
            out.append(click.option(name, f.name, type=click_type, help=meta["help"], **shown))
    return out


def int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """A click callback: a comma list of integers, sorted, each once."""
    if value is None:
        return None
    flag = "--" + (param.name or "").replace("_", "-")
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise VisionbenchError(f"{flag} takes a comma list of integers, got '{value}'") from None
    if not items:
        raise VisionbenchError(f"{flag} is empty")
    return sorted(set(items))


def node_list(value: str | None) -> list[str] | None:
    """``--nodes``: a comma list of node selectors (empty when only commas: the API says so);
    None when not given."""
    return None if value is None else [n.strip() for n in value.split(",") if n.strip()]


def options(options: list) -> Callable:
    def apply(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


#: Where a run's results go: every measuring command.
OUTPUT = [
    click.option("--output", type=click.Path(path_type=Path),
                 help="Run directory [default: results/<timestamp>-<hostname>; fleet: "
                      "results/<timestamp>-fleet]. One that already holds a run is refused, "
                      "unless --append or --overwrite."),
    click.option("--append", is_flag=True,
                 help="Add this command's measurements to the run already in --output (same "
                      "model file, same machine and software; its records are kept)."),
    click.option("--replace", "replace_records", is_flag=True,
                 help="With --append: measure again, in their place, records the run already has."),
    click.option("--overwrite", is_flag=True,
                 help="Replace the run in --output: it is moved aside, and deleted once this run "
                      "has stored its first measurement."),
]

#: What to run and on what: every measuring command.
STUDY = [*flags_of(Study, Launch, Inputs, group="study"), *OUTPUT]

#: The engines' own options (each engine declares its own, in its file): every measuring command.
ENGINE = [click.option(opt.flag, name, type=click.Choice(opt.choices) if opt.choices else int,
                       help=opt.help) for name, (opt, _) in all_options().items()]

#: How the engine is configured: the reference study's method or the engine's own.
(METHOD,) = flags_of(Study, group="method")

#: The worker processes' environment: allocator, OpenMP runtime, variables.
ENVIRONMENT = flags_of(Launch, group="environment")

#: Pinned instances, worker isolation and environment: shared by run, sweep, suite and fleet.
INSTANCES = [*flags_of(Launch, group="instances"), *ENVIRONMENT, *ENGINE]

#: How long and how often to time: shared by run and sweep.
TIMING = flags_of(Timing, group="timing")

#: The whole pipeline's (--mode pipeline): its worker threads and batch.
PIPELINE = flags_of(Study, group="pipeline")

#: The study's own options: shared by run, suite and fleet.
STUDY_MODES = [*flags_of(Study, group="modes"), METHOD, *PIPELINE]

#: run's own: the study's, and a plan-only dry run.
RUN_MODES = [*STUDY_MODES, click.option(
    "--dry-run", is_flag=True,
    help="Check the options and --output, print the planned measurements and where they would "
         "go, and exit: nothing is measured, built or created.")]


def study(append: bool = False, overwrite: bool = False, **kw: Any) -> dict[str, Any]:
    """The command line's options as ``api.study_config`` takes them: the output policy from its
    switches; modes and methods left to their defaults where not given."""
    if append and overwrite:
        raise VisionbenchError("give --append or --overwrite, not both")
    existing = "append" if append else "overwrite" if overwrite else "refuse"
    return {"existing": existing, **{k: v for k, v in kw.items()
                                     if v is not None or k not in ("modes", "methods", "pipeline_threads")}}


_REFERENCE = sorted(set(REFERENCE_BATCH.values()), reverse=True)

#: tune's own options, its batch sizes and the environment (searched where not given).
TUNE = [
    *flags_of(Tune), *ENVIRONMENT,
    click.option("--batch-sizes", callback=int_list,
                 help=f"Batch sizes to explore [default: {','.join(map(str, LADDER))}, up to where "
                      "throughput stops rising]."),
    click.option("--batch-size", type=int,
                 help="The default setting's batch size, that a winner must match or beat "
                      f"[default: the study's, {' or '.join(map(str, _REFERENCE))}]."),
]


#: fleet's own options; --runtime-env names the JSON file its runtime_env is read from.
FLEET = [
    *flags_of(Fleet),
    click.option("--runtime-env", type=click.Path(path_type=Path),
                 help="A JSON file with Ray's runtime_env for every node's task (e.g. pip packages)."),
]


#: compare's options.
COMPARE = [
    click.option("--baseline", type=click.Path(path_type=Path),
                 help="The run the others are compared with [default: the first RUN]."),
    click.option("--output", type=click.Path(path_type=Path),
                 help="Directory for compare.html/.md/.json and the figures "
                      "[default: results/compare-<timestamp>]; refused where it holds "
                      "anything, unless --overwrite."),
    click.option("--overwrite", is_flag=True,
                 help="Replace what --output holds (moved aside, deleted once written)."),
    click.option("--run-noise", type=click.FloatRange(0, 100, max_open=True),
                 help="How much (%) a throughput figure moves from run to run beyond its "
                      "windows' spread on these machines (0: trust the windows alone) "
                      f"[default: {RUN_NOISE_RATIO:g}x the windows' spread]."),
]

EXPORT = [
    click.option("--output", required=True, type=click.Path(path_type=Path),
                 help="Where to write the ONNX file."),
    click.option("--model", default="resnet50", show_default=True,
                 help="Built-in model name (`visionbench models` lists them)."),
    click.option("--weights", type=click.Path(path_type=Path),
                 help="A torchvision ResNet-50 checkpoint to export with (instead of seeded "
                      "weights)."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--overwrite", is_flag=True, help="Replace --output where it exists."),
]
