"""ResNet-50 v1.5 as a torch module whose state_dict keys are exactly torchvision's, so a
torchvision checkpoint loads directly; torchvision's own definition is used when it imports.

Requires torch (the ``[torch]`` extra); nothing here imports it at package import time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from visionbench.errors import VisionbenchError, describe
from visionbench.models.resnet50 import RESNET50, ResNetConfig, layout, weight_shapes


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5): stride on the 3x3 convolution; one ReLU module reused."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig = RESNET50) -> None:
        super().__init__()
        w = cfg.width
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        _, blocks = layout(cfg)
        inplanes = w
        for stage in range(4):
            layers = []
            for b in (b for b in blocks if b.prefix.startswith(f"layer{stage + 1}.")):
                stride = b.convs[1].stride
                ds = None
                if b.downsample is not None:
                    ds = nn.Sequential(
                        nn.Conv2d(inplanes, b.planes * 4, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(b.planes * 4),
                    )
                layers.append(Bottleneck(inplanes, b.planes, stride, ds))
                inplanes = b.planes * 4
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def make_module(cfg: ResNetConfig) -> tuple[nn.Module, str]:
    """torchvision's resnet50 when it imports and the shape is standard, else our own twin."""
    if cfg.blocks == RESNET50.blocks and cfg.width == RESNET50.width:
        try:
            from torchvision.models import resnet50

            return resnet50(weights=None, num_classes=cfg.num_classes), "torchvision.models.resnet50"
        except Exception:
            pass
    return ResNet(cfg), "visionbench.models.torch_resnet.ResNet"


def check_state_dict(sd: object, cfg: ResNetConfig = RESNET50, source: str = "checkpoint") -> None:
    """One clear error naming the first key that does not fit torchvision's ResNet-50."""
    if not isinstance(sd, dict) or not sd or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
    ):
        raise VisionbenchError(
            f"{source} is not a state_dict (a mapping of parameter names to tensors)"
        )
    expected = weight_shapes(cfg)
    for key, shape in expected.items():
        if key not in sd:
            raise VisionbenchError(f"{source} is missing key '{key}' of ResNet-50 v1.5")
        if tuple(sd[key].shape) != shape:
            raise VisionbenchError(
                f"{source}: '{key}' has shape {tuple(sd[key].shape)}, ResNet-50 v1.5 needs {shape}"
            )
    for key in sd:
        if key not in expected and not key.endswith("num_batches_tracked"):
            raise VisionbenchError(f"{source} has unexpected key '{key}' (not ResNet-50 v1.5)")


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 state_dict from ``path``, loaded with ``weights_only=True``."""
    if not path.is_file():
        raise VisionbenchError(f"weights file not found: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise VisionbenchError(f"cannot load weights {path}: {describe(e)}") from e
    check_state_dict(sd, RESNET50, str(path))
    return sd


def numpy_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """float32 numpy arrays of the weights (num_batches_tracked dropped), for the ONNX builder."""
    return {
        k: v.detach().float().numpy() for k, v in sd.items() if not k.endswith("num_batches_tracked")
    }


def module_from_arrays(cfg: ResNetConfig, arrays: dict[str, np.ndarray]) -> tuple[nn.Module, str]:
    """A module in eval mode carrying ``arrays`` (torchvision-keyed weights)."""
    module, definition = make_module(cfg)
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.endswith("num_batches_tracked")] + list(unexpected)
    if bad:
        raise VisionbenchError(f"weights do not fit {definition}: first mismatched key '{bad[0]}'")
    return module.eval(), definition
