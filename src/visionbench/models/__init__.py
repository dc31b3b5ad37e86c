"""Model registry: built-in models by name, or any image-classification ONNX file by path."""

from __future__ import annotations

from pathlib import Path

import onnx

from visionbench.fsutil import atomic_write_bytes, cache_dir
from visionbench.models.onnx_graph import build_onnx
from visionbench.models.resnet50 import RESNET50, RESNET50_TINY, ResNetConfig, macs, seeded_weights
from visionbench.models.spec import ModelSpec, read_onnx

#: Built-in models by name. ``resnet50-tiny`` is a reduced variant for tests and smoke runs.
BUILTIN: dict[str, ResNetConfig] = {"resnet50": RESNET50, "resnet50-tiny": RESNET50_TINY}
DEFAULT_MODEL = "resnet50"
DEFAULT_SEED = 0
#: Bump when the builder's output changes, so stale cached files are not reused.
BUILDER_REVISION = 1


def builtin_path(name: str, seed: int = DEFAULT_SEED) -> Path:
    cfg = BUILTIN[name]
    return cache_dir() / "models" / f"{name}-v1.5-{cfg.tag}-seed{seed}-r{BUILDER_REVISION}.onnx"


def build_builtin(name: str, seed: int = DEFAULT_SEED) -> Path:
    """The built-in model's ONNX file, built once and cached."""
    path = builtin_path(name, seed)
    if not path.exists():
        cfg = BUILTIN[name]
        sd = seeded_weights(cfg, seed)
        doc = f"visionbench {name}: ResNet-50 v1.5 topology {cfg.tag}, seeded weights (seed {seed})"
        model = build_onnx(sd, cfg, doc)
        atomic_write_bytes(path, model.SerializeToString())
    return path


def resolve(model: str | None = None, seed: int = DEFAULT_SEED) -> ModelSpec:
    """A built-in name (built on first use) or a path to the user's ONNX file."""
    model = model or DEFAULT_MODEL
    if model in BUILTIN:
        gflop = 2 * macs(BUILTIN[model]) / 1e9
        return read_onnx(build_builtin(model, seed), model, "built-in", gflop)
    return read_onnx(Path(model))


def load_onnx(spec: ModelSpec) -> onnx.ModelProto:
    return onnx.load(str(spec.path))
