"""A fake engine: the driver, resume, tune's search, compare's verdicts and the renderers tested
in milliseconds, with no runtime to load and timings that are known.

Enabled by the environment variable ``VISIONBENCH_FAKE_ENGINE``: a JSON object of ``Settings``
fields, or ``1`` for the defaults. Worker processes inherit it, so the engine registry finds the
engine ``fake`` there too. Each call sleeps (or, with ``busy``, spins the CPU) a set time per
batch, scaled per precision, with optional noise, drift and failures; its outputs are a fixed
seeded projection of the input, rounded as the precision would (or, for the precisions in
``fp32_outputs_for``, FP32's own: a lower precision that did not run)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from visionbench.engines import FAKE_ENGINE
from visionbench.engines.base import (
    SESSIONS,
    Engine,
    Execution,
    KnobVerdict,
    Precision,
    Session,
    SessionSpec,
    Support,
    Variant,
    concurrently,
    session_variants,
)
from visionbench.errors import VisionbenchError
from visionbench.launch.environment import Environment
from visionbench.models.spec import ModelSpec
from visionbench.sysinfo import CpuFeatures
from visionbench.version import __version__

ENV = FAKE_ENGINE


@dataclass(frozen=True)
class Settings:
    #: Fixed cost of each call and cost per image, in milliseconds, at FP32.
    ms_per_batch: float = 0.2
    ms_per_image: float = 0.05
    #: Each precision's speed-up over FP32.
    speedup: Mapping[str, float] = field(default_factory=lambda: {"fp32": 1.0, "bf16": 2.0, "int8": 3.0})
    #: Spin the CPU for the call's time instead of sleeping.
    busy: bool = False
    #: Coefficient of variation of a call's time (lognormal).
    noise: float = 0.0
    #: Slowdown per second of a session's life (0.01: 1% slower each second).
    drift: float = 0.0
    #: Coefficients of variation of a speed factor drawn once per session (run-to-run noise) and
    #: of one drawn again every ``slow_noise_s`` seconds of its life (window-to-window noise): a
    #: host's noise as benchmarks/verdicts.py measures it. Drawn from the clock, so that two runs
    #: of the same settings differ.
    session_noise: float = 0.0
    slow_noise: float = 0.0
    slow_noise_s: float = 1.0
    #: A call's cost with ``sessions`` concurrent sessions is multiplied by sessions ** this
    #: (1: no gain from concurrency; under 1: throughput grows with sessions).
    session_cost: float = 1.0
    #: Calls a session runs before every further call raises (a failing engine); None: never.
    fail_after: int | None = None
    #: Every this many calls of a session raises (a flaky engine: a served model's HTTP 5xx or
    #: gRPC error on some requests); and every ``stall_every`` calls take ``stall_ms`` longer.
    fail_every: int | None = None
    stall_every: int | None = None
    stall_ms: float = 0.0
    #: Precisions whose outputs are FP32's (a lower precision that did not run).
    fp32_outputs_for: tuple[str, ...] = ()
    #: Precisions this engine cannot run here, with why.
    unsupported: Mapping[str, str] = field(default_factory=dict)
    #: Environment knobs NAME=VALUE (offered to tune as variants) and the speed-up each gives a
    #: session whose process has it set; and the knobs recorded as doing nothing (not searched).
    env_speedup: Mapping[str, float] = field(default_factory=dict)
    env_nothing: tuple[str, ...] = ()
    seed: int = 0

    @classmethod
    def from_env(cls) -> Settings:
        text = os.environ.get(ENV, "").strip()
        if text in ("", "1"):
            return cls()
        try:
            values = json.loads(text)
            if "fp32_outputs_for" in values:
                values["fp32_outputs_for"] = tuple(values["fp32_outputs_for"])
            return cls(**values)
        except (ValueError, TypeError) as e:
            raise VisionbenchError(f"{ENV} is not a JSON object of fake-engine settings: {e}") from None


def _to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to bfloat16's 8-bit mantissa (nearest even), kept as float32."""
    bits = x.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def _to_int8(x: np.ndarray) -> np.ndarray:
    scale = float(np.abs(x).max()) / 127 or 1.0
    return (np.round(x / scale).clip(-127, 127) * scale).astype(np.float32)


def speed_factor(rng: np.random.Generator, cv: float, size: int | None = None) -> Any:
    """Lognormal speed factors of mean 1 and coefficient of variation ``cv`` (exactly 1.0 where
    cv is 0): one, or an array of ``size``. The fake engine's noise and the verdicts' noise model
    (``testing.verdicts``) draw them alike."""
    sigma = float(np.sqrt(np.log1p(cv ** 2)))
    return rng.lognormal(-sigma ** 2 / 2, sigma, size)


class FakeSession(Session):
    def __init__(self, model: ModelSpec, precision: Precision, settings: Settings,
                 cost: float) -> None:
        self.model, self.precision, self.settings, self.cost = model, precision, settings, cost
        self.calls = 0
        self.born = time.perf_counter()
        self.rng = np.random.default_rng(settings.seed)
        self.noise_rng = np.random.default_rng(time.perf_counter_ns())
        self.factor = float(speed_factor(self.noise_rng, settings.session_noise))
        self.env_factor = float(np.prod([v for k, v in settings.env_speedup.items()
                                         if os.environ.get(k.split("=")[0]) == k.split("=", 1)[1]]))
        self.slow: dict[int, float] = {}
        per_image = model.channels * model.height * model.width
        self.stride = max(per_image // 64, 1)
        features = len(range(0, per_image, self.stride))
        self.weights = np.random.default_rng(settings.seed).standard_normal(
            (features, model.num_classes or 10), dtype=np.float32)
        self.execution = Execution(
            executed_precision=precision, layer_precisions={precision: 1},
            quantized_ops=1 if precision == "int8" else None,
            details={"api": "fake engine", "settings": asdict(settings)})

    def _wait(self, batch: int) -> None:
        s = self.settings
        ms = (s.ms_per_batch + s.ms_per_image * batch) / s.speedup.get(self.precision, 1.0) * self.cost
        age = time.perf_counter() - self.born
        ms *= (1 + s.drift * age) * self.factor / self.env_factor
        if s.slow_noise:
            period = int(age / s.slow_noise_s)
            if period not in self.slow:
                self.slow[period] = float(speed_factor(self.noise_rng, s.slow_noise))
            ms *= self.slow[period]
        if s.noise:
            ms *= float(speed_factor(self.rng, s.noise))
        end = time.perf_counter() + ms / 1e3
        if s.busy:
            while time.perf_counter() < end:
                pass
        else:
            time.sleep(max(end - time.perf_counter(), 0))

    def run(self, batch: Any) -> np.ndarray:
        self.calls += 1
        if self.settings.fail_after is not None and self.calls > self.settings.fail_after:
            raise RuntimeError(f"the fake engine failed after {self.settings.fail_after} calls")
        if self.settings.fail_every and self.calls % self.settings.fail_every == 0:
            raise RuntimeError(f"the fake engine fails every {self.settings.fail_every} calls")
        if self.settings.stall_every and self.calls % self.settings.stall_every == 0:
            time.sleep(self.settings.stall_ms / 1e3)
        x = np.asarray(batch, dtype=np.float32)
        self._wait(len(x))
        logits = x.reshape(len(x), -1)[:, ::self.stride] @ self.weights
        if self.precision in self.settings.fp32_outputs_for or self.precision == "fp32":
            return logits
        return _to_bf16(logits) if self.precision == "bf16" else _to_int8(logits)


class FakeEngine(Engine):
    name = "fake"
    module = "numpy"
    extra = "test"
    options = (SESSIONS,)

    @classmethod
    def installed(cls) -> bool:
        return ENV in os.environ

    def cannot_run(self, model: ModelSpec) -> str | None:
        if model.format != "onnx" or not model.num_classes:
            return f"the fake engine runs classifiers only; {model.name} is a {model.task} model"
        return None

    def versions(self) -> dict[str, str]:
        return {"fake-engine": __version__}

    def support(self, precision: Precision, cpu: CpuFeatures) -> Support:
        why = Settings.from_env().unsupported.get(precision)
        return Support("unsupported", why) if why else Support("native")

    def prepare(self, spec: SessionSpec) -> Session:
        settings = Settings.from_env()
        cost = (spec.option("sessions") or 1) ** settings.session_cost
        return concurrently(spec, lambda _: FakeSession(spec.model, spec.precision, settings, cost))

    def search_space(self, precision: Precision, threads: int) -> list[Variant]:
        return session_variants(threads)

    def environment_candidates(self) -> dict[str, Environment]:
        return {k: Environment(env=((k.split("=")[0], k.split("=", 1)[1]),))
                for k in Settings.from_env().env_speedup}

    @property
    def environment_knobs(self) -> dict[str, tuple[KnobVerdict, str]]:  # type: ignore[override]
        return {k: ("nothing", "the fake engine's settings say so")
                for k in Settings.from_env().env_nothing}

    def own_method(self, mode: str, precision: Precision, threads: int
                   ) -> tuple[dict[str, Any] | None, str]:
        if mode == "throughput":
            return {"sessions": 2}, "two sessions at once (the fake engine's own configuration)"
        return None, "the fake engine's batch-1 latency is one session's call"
