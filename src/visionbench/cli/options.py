"""The command line's shared option groups, named as ``api.study_config`` takes them."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from visionbench.config import REFERENCE_BATCH
from visionbench.engines import DEFAULT_ENGINE, all_options
from visionbench.errors import VisionbenchError
from visionbench.results.fleet import OUTLIER_PCT
from visionbench.scenarios.search import LADDER


def flags_of(cls: type) -> list[Callable]:
    """The flags a dataclass declares (``visionbench.flags.flag`` fields), as click options:
    its type from the annotation, its default shown where it has one."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        kind = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
        name = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        if kind is bool:
            out.append(click.option(name, f.name, is_flag=True, help=f.metadata["help"]))
            continue
        shown = {"default": f.default, "show_default": True} if f.default is not None else {}
        out.append(click.option(name, f.name, type=click.Path(path_type=Path) if kind is Path
                                else kind, help=f.metadata["help"], **shown))
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


def options(options: list) -> Callable:
    def apply(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


#: What to run and on what: shared by run and accuracy.
STUDY = [
    click.option("--engine", "engine", default=DEFAULT_ENGINE, show_default=True,
                 help="Engine name, comma list, or 'all' (every installed engine)."),
    click.option("--precision", help="Comma list of fp32, bf16, int8 [default: all three]."),
    click.option("--model", default="resnet50", show_default=True,
                 help="A built-in model (`visionbench models` lists them), or a path to an ONNX file "
                      "or a TensorFlow model (.keras, .h5, .pb, SavedModel directory)."),
    click.option("--weights", type=click.Path(path_type=Path),
                 help="ResNet-50 weights: a torchvision checkpoint (.pth state_dict; every engine "
                      "runs it) or TensorFlow's own file (.keras, .h5, .pb, SavedModel directory)."),
    click.option("--input-name", help="Input tensor of a TensorFlow model file, if it cannot be inferred."),
    click.option("--output-name", help="Output (logits) tensor of a TensorFlow model file, if ambiguous."),
    click.option("--input-shape", help="An ONNX model's input shape, e.g. 1,3,640,640, setting the "
                                       "dimensions the file leaves dynamic or unknown; a dynamic "
                                       "batch follows --batch-size [default: the task's size: 224, "
                                       "detection 640, segmentation 512]."),
    click.option("--task", type=click.Choice(["classification", "detection", "segmentation", "other"]),
                 help="What an ONNX model does [default: inferred from its outputs, else other]."),
    click.option("--threads", type=int, help="Threads per engine [default: all available cores]."),
    click.option("--data", type=click.Path(path_type=Path),
                 help="Images: class folders named by WordNet id, or a folder with val_map.txt. "
                      "Calibrates INT8 on real images; with --accuracy, measures accuracy on them."),
    click.option("--labels", type=click.Path(path_type=Path),
                 help="Labels file ('filename label' lines) for a flat --data folder."),
    click.option("--limit", type=int, help="Use only the first N images of --data."),
    click.option("--calibration-data", type=click.Path(path_type=Path),
                 help="INT8 calibration images: a folder, or a list file (MLPerf cal_image_list form) "
                      "[default: a fixed-seed sample of --data, else synthetic]."),
    click.option("--calibration-samples", type=int, help="INT8 calibration samples [default: 300]."),
    click.option("--preprocess", help="Image preprocessing instead of the model's own: torchvision, "
                                      "mlperf or efficientnet-lite."),
    click.option("--allow-emulated", is_flag=True,
                 help="Measure a precision this CPU lacks natively, where the engine can emulate it."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights and inputs."),
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


#: The engines' own options (each engine declares its own, in its file): every measuring command.
ENGINE = [click.option(opt.flag, name, type=click.Choice(opt.choices) if opt.choices else int,
                       help=opt.help) for name, (opt, _) in all_options().items()]

#: How the engine is configured: the reference study's method or the engine's own.
METHOD = click.option(
    "--method", help="Comma list of reference (one process, one synchronous request, the "
                     "reference batch) and engine (the engine's own throughput or latency "
                     "configuration, as its benchmark tool runs it) [default: both; reference "
                     "only when an engine option is given; mlperf: reference].")

#: Pinned instances and worker isolation: shared by run, sweep, suite and fleet.
INSTANCES = [
    click.option("--instances", type=int,
                 help="Engine processes run at once, each pinned to its own cores; throughput is "
                      "their sum [default: one, in this process, unpinned]."),
    click.option("--cores-per-instance", type=int,
                 help="Physical cores per instance [default: the available cores / --instances]."),
    click.option("--layout", type=click.Choice(["throughput", "latency", "reference"]),
                 help="The reference scripts' instances: throughput = one per NUMA node with all "
                      "its cores; latency = 4 cores each, filling the machine; reference = each "
                      "mode its own."),
    click.option("--isolation", type=click.Choice(["engine", "measurement", "none"]),
                 help="engine: each engine's measurements in a fresh worker process of its own, "
                      "so none runs beside another engine's runtime or inherits its memory; "
                      "measurement: each measurement in one of its own, so none holds what an "
                      "earlier one left (a process start and the engine's import each); none: "
                      "every engine in this process [default: engine]."),
    *ENGINE,
]


#: How long and how often to time: shared by run and sweep.
TIMING = [
    click.option("--duration", type=float,
                 help="Seconds per timed repeat [default: 10 throughput, 5 latency]."),
    click.option("--iterations", type=int, help="Inferences per timed repeat (instead of --duration)."),
    click.option("--repeats", type=int, help="Independent timed repeats [default: 3]."),
    click.option("--warmup", type=int,
                 help="Warm-up inferences [default: 2 batches throughput, 20 latency]."),
    click.option("--quick", is_flag=True,
                 help="A smoke run in about a minute: throughput batch 16, short repeats."),
]


#: The study's own options: shared by run and fleet.
STUDY_MODES = [
    click.option("--mode", help="Comma list of throughput, latency and cold (each engine and "
                                "precision started in fresh processes, timed to its first answer) "
                                "[default: throughput,latency]."),
    click.option("--no-cache", is_flag=True,
                 help="--mode cold: re-run INT8 quantization in each fresh process instead of "
                      "reading visionbench's cache."),
    click.option("--drop-caches", is_flag=True,
                 help="--mode cold: drop the OS file cache before each fresh process (root)."),
    METHOD,
    click.option("--accuracy", is_flag=True,
                 help="Also measure accuracy on --data at every precision."),
    click.option("--batch-size", type=int,
                 help="Throughput batch size [default: 116 for fp32 and int8, 80 for bf16]."),
]



def study(engine: str, precision: str | None, mode: str | None = None,
          method: str | None = None, append: bool = False, overwrite: bool = False,
          **kw: Any) -> dict[str, Any]:
    """The command line's names as ``api.study_config`` takes them."""
    if append and overwrite:
        raise VisionbenchError("give --append or --overwrite, not both")
    existing = "append" if append else "overwrite" if overwrite else "refuse"
    return {"engines": engine, "precisions": precision, "existing": existing,
            **({"modes": mode} if mode is not None else {}),
            **({"methods": method} if method is not None else {}), **kw}


_REFERENCE = sorted(set(REFERENCE_BATCH.values()), reverse=True)

#: tune's own options.
TUNE = [
    click.option("--budget", default="10m", show_default=True,
                 help="Wall time for the whole search (e.g. 90s, 5m, 1h); one-off INT8 quantization "
                      "is not counted."),
    click.option("--max-latency-ms", type=float,
                 help="Only settings whose p99 latency per call (one batch) stays within this bound."),
    click.option("--batch-sizes", callback=int_list,
                 help=f"Batch sizes to explore [default: {','.join(map(str, LADDER))}, up to where "
                      "throughput stops rising]."),
    click.option("--batch-size", type=int,
                 help="The default setting's batch size, that a winner must match or beat "
                      f"[default: the study's, {' or '.join(map(str, _REFERENCE))}]."),
]


#: fleet's own options.
FLEET = [
    click.option("--address", default="auto", show_default=True,
                 help="The Ray cluster: auto (RAY_ADDRESS, else the cluster started on this machine), "
                      "HOST:PORT of its head, or ray://HOST:10001 (Ray Client)."),
    click.option("--nodes", help="Comma list of nodes to run on: node ids (or their first 6+ characters), "
                                 "hostnames, IP addresses, Ray resource names or labels key=value "
                                 "[default: every alive node with CPUs]."),
    click.option("--sequential/--concurrent", default=True, show_default=True,
                 help="One node after another (nodes sharing hardware do not disturb each other), or "
                      "all at once with each measurement's windows started together (the cluster's "
                      "aggregate images/s)."),
    click.option("--node-timeout", type=float,
                 help="Seconds a node may take for its whole study before it is stopped and reported "
                      "as timed out [default: no limit]."),
    click.option("--outlier-pct", type=float, default=OUTLIER_PCT, show_default=True,
                 help="A node slower than the fleet median by more than this many percent is an outlier."),
    click.option("--runtime-env", type=click.Path(path_type=Path),
                 help="A JSON file with Ray's runtime_env for every node's task (e.g. pip packages)."),
]
