"""ResNet-50 v1.5 (torchvision / MLPerf topology) with deterministic seeded weights, and a reduced
variant of the same block structure for tests and smoke runs."""

from __future__ import annotations

import onnx

from visionbench.models import resnet_weights
from visionbench.models.onnx_graph import build_onnx
from visionbench.models.registry import SEEDED, ModelCard, register
from visionbench.models.resnet50 import (
    RESNET50,
    RESNET50_TINY,
    ResNetConfig,
    macs,
    parameter_count,
    seeded_weights,
)


def _card(name: str, cfg: ResNetConfig, summary: str) -> ModelCard:
    return ModelCard(
        name=name, task="classification", summary=summary, params=parameter_count(cfg),
        gflop_per_image=2 * macs(cfg) / 1e9, num_classes=cfg.num_classes,
        height=cfg.image_size, width=cfg.image_size, weights_source=SEEDED,
        torch_module=resnet_weights.torch_module, keras_model=resnet_weights.keras_model,
        # 2: residual branches scaled down, batch norms set from synthetic images; 3: from 32 of
        # them, and a classifier that reads their features' principal directions
        revision=3,
    )


def _build(name: str, cfg: ResNetConfig, seed: int) -> onnx.ModelProto:
    doc = f"visionbench {name}: ResNet-50 v1.5 topology {cfg.tag}, seeded weights (seed {seed})"
    return build_onnx(seeded_weights(cfg, seed), cfg, doc)


@register(_card("resnet50", RESNET50, "ResNet-50 v1.5, 224x224, 1000 classes (the study's model)"))
def resnet50(seed: int) -> onnx.ModelProto:
    return _build("resnet50", RESNET50, seed)


@register(_card("resnet50-tiny", RESNET50_TINY,
                "ResNet-50 v1.5 block structure, 1 block per stage, width 8, 64x64, 100 classes"))
def resnet50_tiny(seed: int) -> onnx.ModelProto:
    return _build("resnet50-tiny", RESNET50_TINY, seed)
