"""Workloads defined as PyTorch modules with deterministic seeded weights: the weights drawn with
numpy's generator (the same on every machine and torch release), batch-norm statistics then set
from a forward pass over random inputs (data-dependent initialisation, as the built-in ResNet-50:
without it a random network maps every input to the same output), exported once to ONNX, which
every ONNX engine runs, with the state dict beside it, from which the PyTorch engine rebuilds the
very same network. Building needs torch (the ``[torch]`` extra); running the ONNX file does not.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionbench.cache import cached
from visionbench.data.synthetic import images
from visionbench.errors import VisionbenchError, describe
from visionbench.fsutil import atomic_write_bytes
from visionbench.models import seeding
from visionbench.models.registry import (
    SEEDED,
    ModelCard,
    ModelTask,
    register,
    revision_path,
    superseded,
)

if TYPE_CHECKING:
    from visionbench.models.spec import ModelSpec

OPSET = 17

#: Random inputs the batch norms take their statistics from.
CALIBRATION_BATCH = 4


def import_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise VisionbenchError("building this model needs PyTorch: pip install torch==2.13.0 (the "
                               "CPU build) or 'visionbench[torch]'") from e
    return torch


def seeded_state(module: Any, seed: int) -> dict[str, np.ndarray]:
    """Weights for every tensor of ``module``'s state dict, drawn in its order from ``seed``:
    He-normal convolutions, 1/sqrt(fan-in) linear layers, normalisation scales near 1 and small
    shifts, small embeddings; running statistics 0 and 1 until calibrated."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key, t in module.state_dict().items():
        shape = tuple(t.shape)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = np.zeros(shape, np.int64)
            continue
        if leaf == "running_mean":
            w = np.zeros(shape)
        elif leaf == "running_var":
            w = np.ones(shape)
        elif leaf == "weight" and len(shape) == 4:
            fan_out = shape[0] * shape[2] * shape[3]
            w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_out)
        elif leaf == "weight" and len(shape) == 2:
            w = rng.standard_normal(shape) / np.sqrt(shape[1])
        elif leaf == "weight":  # batch and layer norm scales
            w = rng.uniform(0.5, 1.5, shape)
        elif leaf == "bias":
            w = rng.normal(0.0, 0.1, shape)
        else:  # class tokens, position embeddings
            w = rng.normal(0.0, 0.02, shape)
        out[key] = w.astype(np.float32)
    return out


def load_state(module: Any, state: dict[str, np.ndarray]) -> Any:
    torch = import_torch()
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return module.eval()


def calibrate_batch_norms(module: Any, shape: Sequence[int], seed: int) -> None:
    """Each batch norm's running statistics become those of the batch it sees in one forward pass
    over random inputs, every earlier one already normalising with its own."""
    torch = import_torch()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, that batch's statistics
        m.train()
    x = np.random.default_rng(seed + 1).standard_normal(tuple(shape)).astype(np.float32)
    with torch.no_grad():
        module(torch.from_numpy(x))
    module.eval()


def condition_classifier(module: Any, shape: Sequence[int], seed: int, num_classes: int) -> None:
    """The classifier (the last linear layer with ``num_classes`` outputs) reads the principal
    directions of its input over ``seeding.IMAGES`` synthetic images with content
    (``seeding.principal_classifier``)."""
    torch = import_torch()
    heads = [m for m in module.modules()
             if isinstance(m, torch.nn.Linear) and m.out_features == num_classes]
    if not heads:
        raise VisionbenchError(f"no classifier of {num_classes} outputs to condition")
    seen: list[np.ndarray] = []
    hook = heads[-1].register_forward_hook(lambda m, i, o: seen.append(i[0].detach().numpy()))
    x = images(seeding.IMAGES, shape[0], shape[1], shape[2], seed + 1)
    try:
        with torch.no_grad():
            module(torch.from_numpy(x))
    finally:
        hook.remove()
    weight, bias = seeding.principal_classifier(seen[0], num_classes,
                                                np.random.default_rng(seed + 2))
    with torch.no_grad():
        heads[-1].weight.copy_(torch.from_numpy(weight))
        heads[-1].bias.copy_(torch.from_numpy(bias))


#: (module) -> the last layer of each residual branch: a linear layer with no normalisation after
#: it, or a batch norm (calibration sets its statistics and keeps its scale and shift).
Branches = Callable[[Any], Sequence[Any]]


def scale_branches(module: Any, branches: Branches) -> None:
    """Scale the last layer of each residual branch (weight and bias) by
    ``seeding.RESIDUAL_SCALE``."""
    torch = import_torch()
    with torch.no_grad():
        for layer in branches(module):
            layer.weight.mul_(seeding.RESIDUAL_SCALE)
            layer.bias.mul_(seeding.RESIDUAL_SCALE)


def build(
    name: str, make: Callable[[], Any], input_shape: tuple[int, int, int], outputs: Sequence[str],
    seed: int, revision: int, classes: int | None = None, branches: Branches | None = None,
) -> Path:
    """The ONNX file of ``make()`` with seeded, calibrated weights (input ``input`` [N, C, H, W],
    the named outputs, the batch dynamic), its state dict beside it (``.npz``); built once per
    seed and cached. ``classes``: a classifier's class count, its head then conditioned
    (``condition_classifier``); ``branches``: its residual branches, scaled down."""
    path = revision_path(name, seed, revision)
    npz = path.with_suffix(".npz")

    def write(path: Path) -> None:
        torch = import_torch()
        module = make()
        load_state(module, seeded_state(module, seed))
        if branches is not None:
            scale_branches(module, branches)
        c, h, w = input_shape
        calibrate_batch_norms(module, (CALIBRATION_BATCH, c, h, w), seed)
        if classes is not None:
            condition_classifier(module, input_shape, seed, classes)
        state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
        buf = io.BytesIO()
        np.savez(buf, **state)
        atomic_write_bytes(npz, buf.getvalue())
        dynamic = {n: {0: "N"} for n in ("input", *outputs)}
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
                warnings.simplefilter("ignore")
                torch.onnx.export(module, torch.zeros(1, c, h, w), buf, input_names=["input"],
                                  output_names=list(outputs), dynamic_axes=dynamic,
                                  opset_version=OPSET, dynamo=False)
        except Exception as e:
            raise VisionbenchError(f"cannot export {name} to ONNX: {describe(e)}") from e
        atomic_write_bytes(path, buf.getvalue())

    return cached(path, f"{name} model (seed {seed})", write, [npz.name],
                  superseded(name, seed, revision))


def module_from_file(make: Callable[[], Any], onnx_path: Path) -> Any:
    """The module whose export ``onnx_path`` is, rebuilt from the state dict written beside it."""
    npz = onnx_path.with_suffix(".npz")
    if not npz.is_file():
        raise VisionbenchError(f"the weights of {onnx_path.name} ({npz.name}) are missing: clear the "
                               "cache (visionbench cache --clear) to rebuild it")
    with np.load(npz) as data:
        state = {k: data[k] for k in data.files}
    return load_state(make(), state)


#: Each registered model's definition (its module, weights not yet set), by name.
MAKERS: dict[str, Callable[[], Any]] = {}


def register_seeded(name: str, task: ModelTask, summary: str, make: Callable[[], Any],
                    outputs: Sequence[str], size: int, num_classes: int,
                    params: int | None = None, gflop: float | None = None,
                    branches: Branches | None = None, **card: Any) -> None:
    """Register a seeded torch-defined model (input 3 x size x size): its card, its ONNX file
    built by ``build``, its PyTorch definition rebuilt from the state dict beside that file.
    ``params`` and ``gflop`` (per image) are checked against the definition by the tests; a
    test variant leaves them out. ``branches``: the model's residual branches, to scale down at
    initialisation (``scale_branches``). ``card``: the card's other fields."""
    MAKERS[name] = make

    def torch_module(spec: ModelSpec) -> tuple[Any, str]:
        return (module_from_file(make, spec.path),
                f"visionbench's {name} with the weights of its ONNX file")

    def onnx_file(seed: int) -> Path:
        return build(name, make, (3, size, size), outputs, seed, entry.revision,
                     num_classes if task == "classification" else None, branches)

    entry = ModelCard(name=name, task=task, summary=summary, params=params, gflop_per_image=gflop,
                      num_classes=num_classes, height=size, width=size, weights_source=SEEDED,
                      built_with="torch", torch_module=torch_module, **card)
    register(entry)(onnx_file)
