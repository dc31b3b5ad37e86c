"""One point of tune's search (``Setting``): batch, pinned instances, method and one of the
engine's own concurrency variants (``Engine.search_space``); the configuration that measures it
and the command that measures it again. It names no engine's option: the variant carries them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from typing import Any

from visionbench.config import RunConfig
from visionbench.engines import Engine, Precision
from visionbench.engines.base import Variant
from visionbench.errors import VisionbenchError
from visionbench.launch.environment import Environment
from visionbench.reporter import Reporter
from visionbench.results.compare import paired_verdict

#: Warm-up batches (at least one per request in flight): the first large batch after one
#: warm-up call still runs slow.
WARMUP = 2


@dataclass(frozen=True)
class Setting:
    """One point of the search. One instance runs in this process, unpinned, on the run's threads
    (the default layout); several are pinned, one thread per core each. ``method`` "engine" is
    the engine's own throughput configuration (OpenVINO's THROUGHPUT hint), with ``variant``'s
    concurrency where given (else the engine's choice)."""

    batch: int
    instances: int = 1
    cores_per_instance: int | None = None
    method: str = "reference"
    variant: Variant | None = None
    #: The process environment, timed in a fresh process of its own (None: the run's, here).
    environment: Environment | None = None

    @property
    def shape(self) -> str:
        """The setting but its method (which a measurement's id holds apart): b64-s2-r4."""
        return (f"b{self.batch}" + (f"-i{self.instances}x{self.cores_per_instance}"
                                    if self.cores_per_instance else "")
                + (f"-{self.variant.tag}" if self.variant else "")
                + ("" if self.environment is None else f"-env{'-' if self.environment.tag else ''}"
                   f"{self.environment.tag}"))

    @property
    def tag(self) -> str:
        """The whole setting: b64-engine-s2-r4."""
        return self.shape.replace(f"b{self.batch}", f"b{self.batch}-engine", 1) \
            if self.method == "engine" else self.shape

    def in_flight(self, threads: int) -> int:
        """Batches in flight: the variant's, else (the engine's choice) at most one per thread;
        one synchronous call for the reference method."""
        if self.variant is not None:
            return self.variant.concurrency.in_flight
        return 1 if self.method == "reference" else threads

    def warmup(self, threads: int) -> int:
        """Warm-up batches, as the harness runs them."""
        return max(WARMUP, self.in_flight(threads))

    def as_dict(self, threads: int) -> dict[str, Any]:
        return {"batch_size": self.batch, "instances": self.instances,
                "cores_per_instance": self.cores_per_instance,
                "threads": self.cores_per_instance or threads, "method": self.method,
                "options": dict(self.variant.options) if self.variant else {},
                "concurrency": self.variant.concurrency.text if self.variant else "",
                "environment": self.environment.as_dict() if self.environment else None}

    def config(self, cfg: RunConfig, engine: Engine, precision: Precision, window: float | None,
               iterations: int | None, warmup: int) -> RunConfig:
        """The configuration that measures this setting for one window: the options the user
        gave (the search never explores against them), and the variant's."""
        options = {**cfg.study.engine_options, **dict(self.variant.options if self.variant else ())}
        if self.environment is not None:
            cfg = cfg.with_environment(self.environment).replace(fresh_process=True)
        return cfg.replace(
            batch_size=self.batch, batch_sizes=None, layout=None,
            instances=self.instances if self.cores_per_instance else None,
            cores_per_instance=self.cores_per_instance, methods=[self.method],
            engine_options=options,
            threads=self.cores_per_instance or cfg.launch.threads,
            threads_explicit=cfg.launch.threads_explicit and not self.cores_per_instance,
            # One window per measurement, not measured again when disturbed (it is marked): the
            # budget holds, and the rounds' paired test is the search's defence against load.
            duration=window, iterations=iterations, repeats=1, extra_windows=0, warmup=warmup,
        ).for_method(engine, self.method, "throughput", precision)


def agrees(variant: Variant, given: dict[str, Any]) -> bool:
    """Whether ``variant`` keeps every option the user gave (a given option pins its axis)."""
    return all(given.get(k, v) == v for k, v in variant.options)


def rerun_command(cfg: RunConfig, engine: str, precision: str, s: Setting) -> str:
    """The ``visionbench run`` command that measures ``s`` with the study's repeats."""
    args = ["visionbench", "run", "--engine", engine, "--precision", precision,
            "--mode", "throughput", "--method", s.method, "--batch-size", str(s.batch)]
    if cfg.study.model != "resnet50":
        args += ["--model", cfg.study.model]
    if cfg.study.weights is not None:
        args += ["--weights", str(cfg.study.weights)]
    if s.cores_per_instance:
        args += ["--instances", str(s.instances), "--cores-per-instance", str(s.cores_per_instance)]
    elif cfg.launch.threads_explicit:
        args += ["--threads", str(cfg.launch.threads)]
    given = {**cfg.study.engine_options, **dict(s.variant.options if s.variant else ())}
    for name, value in given.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    args += (s.environment or cfg.environment).flags()
    return shlex.join(args)


def control(s: Setting) -> Setting:
    """The setting an environment variant is judged against: the same, in a fresh process of
    its own as shipped."""
    return replace(s, environment=Environment())


def faster_than_control(s: Setting, ips: dict[Setting, list[float]]) -> bool:
    """Whether ``s`` may win: a setting as shipped always; an environment variant only where its
    confirmation rounds show it faster than its control (the paired test, as against the
    default)."""
    if s.environment is None or s.environment.default:
        return True
    c = control(s)
    if c not in ips or s not in ips:
        return False
    return paired_verdict([a / b for a, b in zip(ips[s], ips[c], strict=True)])[1] == "faster"


def environments(engine: Engine, cfg: RunConfig, reporter: Reporter) -> dict[str, Environment]:
    """The engine's environment variants whose libraries are installed here; each one left out
    told once."""
    out = {}
    for name, env in engine.environments().items():
        try:
            env.variables()
        except VisionbenchError as e:
            reporter.note(f"tune {engine.name}: {name} left out: {e}")
            continue
        out[name] = env
    return out
