"""One point of tune's search (``Setting``): batch, pinned instances, method and the engine's
own concurrency; the configuration that measures it and the command that measures it again."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from visionbench.config import RunConfig
from visionbench.engines import Engine, Precision

#: Warm-up batches (at least one per request in flight): the first large batch after one
#: warm-up call still runs slow.
WARMUP = 2
#: The engine options a setting sets itself.
SEARCHED = ("streams", "requests", "hint", "sessions")


@dataclass(frozen=True)
class Setting:
    """One point of the search. One instance runs in this process, unpinned, on the run's threads
    (the default layout); several are pinned, one thread per core each. ``method`` "engine" is
    the engine's own throughput configuration (OpenVINO's THROUGHPUT hint), with ``streams``
    and ``requests`` in flight where given (else the engine's choice)."""

    batch: int
    instances: int = 1
    cores_per_instance: int | None = None
    method: str = "reference"
    streams: int | None = None
    requests: int | None = None

    @property
    def shape(self) -> str:
        """The setting but its method (which a measurement's id holds apart): b64-s2-r4."""
        return (f"b{self.batch}" + (f"-i{self.instances}x{self.cores_per_instance}"
                                    if self.cores_per_instance else "")
                + (f"-s{self.streams}" if self.streams else "")
                + (f"-r{self.requests}" if self.requests else ""))

    @property
    def tag(self) -> str:
        """The whole setting: b64-engine-s2-r4."""
        return self.shape.replace(f"b{self.batch}", f"b{self.batch}-engine", 1) \
            if self.method == "engine" else self.shape

    def in_flight(self, threads: int) -> int:
        """Requests in flight: as asked, else one per stream, else (the engine's choice) at most
        one per thread; one synchronous call for the reference method."""
        if self.method == "reference":
            return self.requests or 1
        return self.requests or self.streams or threads

    def warmup(self, threads: int) -> int:
        """Warm-up batches, as the harness runs them."""
        return max(WARMUP, self.in_flight(threads))

    def as_dict(self, threads: int) -> dict[str, Any]:
        return {"batch_size": self.batch, "instances": self.instances,
                "cores_per_instance": self.cores_per_instance,
                "threads": self.cores_per_instance or threads, "method": self.method,
                "streams": self.streams, "requests": self.requests}

    def config(self, cfg: RunConfig, engine: Engine, precision: Precision, window: float | None,
               iterations: int | None, warmup: int) -> RunConfig:
        """The configuration that measures this setting for one window."""
        options = {k: v for k, v in cfg.study.engine_options.items() if k not in SEARCHED}
        options |= {k: v for k, v in (("streams", self.streams), ("requests", self.requests)) if v}
        return cfg.replace(
            batch_size=self.batch, batch_sizes=None, layout=None,
            instances=self.instances if self.cores_per_instance else None,
            cores_per_instance=self.cores_per_instance, methods=[self.method],
            engine_options=options,
            threads=self.cores_per_instance or cfg.launch.threads,
            threads_explicit=cfg.launch.threads_explicit and not self.cores_per_instance,
            duration=window, iterations=iterations, repeats=1, warmup=warmup,
        ).for_method(engine, self.method, "throughput", precision)


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
    if s.streams:
        args += ["--streams", str(s.streams)]
    if s.requests:
        args += ["--requests", str(s.requests)]
    return shlex.join(args)
