"""The model registry, by name: each built-in model is one registered build function plus its card
(task, input, parameters, GFLOPs, preprocessing, classes, where its weights come from) and,
optionally, its definition in PyTorch and in Keras for the engines that rebuild a model in their
own framework. Every module in ``visionbench.models.zoo`` registers its models when imported.

Engines never test a model's name: they ask ``torch_module`` / ``keras_model`` (``models``), which
read the card."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from visionbench.cache import cached
from visionbench.errors import VisionbenchError
from visionbench.fsutil import atomic_write_bytes, cache_dir

if TYPE_CHECKING:
    import onnx

    from visionbench.models.spec import ModelSpec

ModelTask = Literal["classification", "detection", "segmentation", "other"]
WeightsKind = Literal["seeded", "packaged"]
#: What an engine needs of a model: its ONNX graph (every model has one), or the model rebuilt
#: in PyTorch or in Keras.
Definition = Literal["onnx", "torch", "keras"]
#: A build function: the seed of seeded weights -> the ONNX graph, or the path of an ONNX file it
#: caches itself (packaged weights, exported once per weights file).
Builder = Callable[[int], "onnx.ModelProto | Path"]
#: How a model's graph is made: written out from numpy weights, exported from its PyTorch
#: definition (building needs torch; running the file does not), or shipped by a package.
BuiltWith = Literal["numpy", "torch", "package"]
SEEDED = "seeded (deterministic per --seed; batch-norm statistics set from data, so outputs " \
         "depend on the input)"


@dataclass(frozen=True)
class ModelCard:
    name: str
    task: ModelTask
    summary: str
    #: Learnable parameters and 2 x multiply-accumulates of one image at the input size (None
    #: for test variants; the figures of the others are checked against the built graph).
    params: int | None
    gflop_per_image: float | None
    num_classes: int | None
    channels: int = 3
    height: int = 224
    width: int = 224
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    preprocessing: str = "torchvision"
    label_offset: int = 0
    weights: WeightsKind = "seeded"
    weights_source: str = "seeded (deterministic per --seed)"
    #: Bump when the build function's output changes, so stale cached files are not reused.
    revision: int = 1
    built_with: BuiltWith = "numpy"
    #: A transformer: quantizers get their transformer settings.
    transformer: bool = False
    #: The SNR under which this model's INT8 fidelity is flagged, where a trained network of its
    #: kind itself reads under ``fidelity.MIN_SNR_DB`` (depthwise networks); None: that.
    int8_min_snr_db: float | None = None
    #: The suite's throughput batch where no reference study fixes one (None: the reference's),
    #: and its INT8 calibration samples where fewer than the run's (heavy detectors).
    suite_batch: int | None = None
    calibration_samples: int | None = None
    #: The registered model the suite's ``--quick`` runs in this one's place (a heavy one at a
    #: smaller input), said in its results.
    quick_stand_in: str | None = None
    #: (spec) -> (torch.nn.Module in eval mode, what it is); None: no PyTorch definition.
    torch_module: Callable[[ModelSpec], tuple[Any, str]] | None = None
    #: (spec) -> keras.Model taking NHWC input; None: no Keras definition.
    keras_model: Callable[[ModelSpec], Any] | None = None


@dataclass(frozen=True)
class Entry:
    card: ModelCard
    build: Builder

    def has(self, definition: Definition) -> bool:
        card = self.card
        return {"onnx": True, "torch": card.torch_module is not None,
                "keras": card.keras_model is not None}[definition]

    def onnx_path(self, seed: int = 0) -> Path:
        """The model's ONNX file, built on first use and cached (seeded weights: per seed)."""
        card = self.card
        path = revision_path(card.name, seed, card.revision)
        if card.built_with != "numpy":  # the builder caches its own file
            built = self.build(seed)
            if isinstance(built, Path):
                return built
            atomic_write_bytes(path, built.SerializeToString())
            return path

        def write(path: Path) -> None:
            built = self.build(seed)
            data = built.read_bytes() if isinstance(built, Path) else built.SerializeToString()
            atomic_write_bytes(path, data)

        return cached(path, f"{card.name} model (seed {seed})", write,
                      supersedes=superseded(card.name, seed, card.revision))


def revision_path(name: str, seed: int, revision: int) -> Path:
    """Where a built-in model's file of this seed and build revision is cached."""
    return cache_dir() / "models" / f"{name}-seed{seed}-r{revision}.onnx"


def superseded(name: str, seed: int, revision: int) -> list[Path]:
    """The cached files of a built-in model's earlier build revisions."""
    return [revision_path(name, seed, r) for r in range(1, revision)]


_REGISTRY: dict[str, Entry] = {}


def register(card: ModelCard) -> Callable[[Builder], Builder]:
    """Register ``card`` with the decorated build function; a name is registered once."""

    def add(build: Builder) -> Builder:
        if card.name in _REGISTRY and _REGISTRY[card.name].build is not build:
            raise ValueError(f"model '{card.name}' is already registered")
        _REGISTRY[card.name] = Entry(card, build)
        return build

    return add


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_zoo() -> None:
    from visionbench.models import zoo

    for info in pkgutil.iter_modules(zoo.__path__):
        importlib.import_module(f"{zoo.__name__}.{info.name}")


def entries() -> dict[str, Entry]:
    """Every registered model by name, the zoo's first."""
    _load_zoo()
    return dict(_REGISTRY)


def find(name: str) -> Entry | None:
    return entries().get(name)


def in_every_process(name: str) -> bool:
    """Whether a fresh process knows the model ``name`` as this one does: a file, or one that
    visionbench itself registers on import (not one registered at run time, e.g. by a test or
    a user's script, which a worker process would not have)."""
    entry = _REGISTRY.get(name)
    if entry is None:
        return True
    build = getattr(entry.build, "func", entry.build)  # functools.partial
    return getattr(build, "__module__", "").startswith("visionbench.")


def get(name: str) -> Entry:
    entry = find(name)
    if entry is None:
        raise VisionbenchError(f"unknown built-in model '{name}'; choose from {', '.join(entries())}")
    return entry
