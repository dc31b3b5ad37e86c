"""RetinaNet as MLPerf Inference runs it (its reference is torchvision's RetinaNet): a ResNeXt-50
32x4d backbone, a feature pyramid over C3-C5 with P6 and P7 (from P5), shared classification and
box heads of four 3x3 convolutions, 9 anchors per cell (3 sizes x 3 aspect ratios), 800x800
input, MLPerf's 264 OpenImages classes; seeded weights.

Inside the graph: backbone, pyramid, heads, the box decoding against the anchors (torchvision's
box coder) and the class scores' sigmoid; outputs ``boxes`` [N, 120087, 4] (x1, y1, x2, y2 in
input pixels) and ``scores`` [N, 120087, 264]. Outside it: the per-level top-k, score threshold
and non-maximum suppression of MLPerf's post-processing. Batch norms are plain (torchvision's
detection backbones freeze them: the same arithmetic at inference)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from visionbench.models import seeded_torch
from visionbench.models.seeded_torch import register_seeded

BBOX_CLIP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class RetinaNetConfig:
    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64  # the stem's channels; stage i has width * 2**i planes
    groups: int = 32
    width_per_group: int = 4
    fpn: int = 256
    image_size: int = 800
    num_classes: int = 264
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)


RETINANET = RetinaNetConfig()
#: The same network at 512x512 (49,104 anchors): what the suite's --quick runs in its place.
RETINANET_512 = RetinaNetConfig(image_size=512)
RETINANET_TINY = RetinaNetConfig(blocks=(1, 1, 1, 1), width=16, groups=4, width_per_group=4, fpn=32,
                                 image_size=128, num_classes=5, anchor_sizes=(8, 16, 32, 64, 128))


def level_sizes(image_size: int) -> list[int]:
    """Cells per side of P3 to P7 (each stride-2 convolution or pool halves, rounding up)."""
    size, out = image_size, []
    for level in range(1, 8):
        size = (size + 1) // 2
        if level >= 3:
            out.append(size)
    return out


def anchors(cfg: RetinaNetConfig) -> np.ndarray:
    """torchvision's anchors (x1, y1, x2, y2 in pixels), level by level, cell by cell, then
    aspect ratio by scale, as the heads emit them."""
    out = []
    for size, f in zip(cfg.anchor_sizes, level_sizes(cfg.image_size), strict=True):
        scales = np.array([size, int(size * 2 ** (1 / 3)), int(size * 2 ** (2 / 3))], np.float32)
        ratios = np.array([0.5, 1.0, 2.0], np.float32)
        h_ratio = np.sqrt(ratios)
        ws = (scales[None, :] / h_ratio[:, None]).ravel()
        hs = (scales[None, :] * h_ratio[:, None]).ravel()
        base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)
        stride = cfg.image_size // f
        sy, sx = np.meshgrid(np.arange(f) * stride, np.arange(f) * stride, indexing="ij")
        shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)
        out.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def retinanet(cfg: RetinaNetConfig) -> Any:
    torch = seeded_torch.import_torch()
    nn = torch.nn
    functional = nn.functional

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, planes: int, stride: int) -> None:
            super().__init__()
            width = planes * cfg.width_per_group * cfg.groups // 64
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cfg.groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = None
            if stride != 1 or cin != planes * 4:
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes * 4))

        def forward(self, x: Any) -> Any:
            idn = x if self.downsample is None else self.downsample(x)
            y = functional.relu(self.bn1(self.conv1(x)))
            y = functional.relu(self.bn2(self.conv2(y)))
            return functional.relu(self.bn3(self.conv3(y)) + idn)

    def head(out: int) -> Any:
        layers: list[Any] = []
        for _ in range(4):
            layers += [nn.Conv2d(cfg.fpn, cfg.fpn, 3, 1, 1), nn.ReLU()]
        return nn.Sequential(*layers, nn.Conv2d(cfg.fpn, out, 3, 1, 1))

    class RetinaNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = cfg.width
            self.stem = nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            self.stages = nn.ModuleList()
            cin = w
            for i, n in enumerate(cfg.blocks):
                planes = w * 2**i
                blocks = []
                for j in range(n):
                    blocks.append(Bottleneck(cin, planes, 2 if j == 0 and i > 0 else 1))
                    cin = planes * 4
                self.stages.append(nn.Sequential(*blocks))
            c3, c4, c5 = (w * 2**i * 4 for i in (1, 2, 3))
            self.inner = nn.ModuleList(nn.Conv2d(c, cfg.fpn, 1) for c in (c3, c4, c5))
            self.layer = nn.ModuleList(nn.Conv2d(cfg.fpn, cfg.fpn, 3, 1, 1) for _ in range(3))
            self.p6 = nn.Conv2d(cfg.fpn, cfg.fpn, 3, 2, 1)
            self.p7 = nn.Conv2d(cfg.fpn, cfg.fpn, 3, 2, 1)
            self.cls_head = head(9 * cfg.num_classes)
            self.box_head = head(9 * 4)
            a = torch.tensor(anchors(cfg))
            self.register_buffer("centre", (a[:, :2] + a[:, 2:]) / 2, persistent=False)
            self.register_buffer("size", a[:, 2:] - a[:, :2], persistent=False)

        def forward(self, x: Any) -> tuple[Any, Any]:
            feats = []
            h = self.stem(x)
            for stage in self.stages:
                h = stage(h)
                feats.append(h)
            c3, c4, c5 = feats[1:]
            last = self.inner[2](c5)
            pyramid = [self.layer[2](last)]
            for c, inner, layer in ((c4, self.inner[1], self.layer[1]),
                                    (c3, self.inner[0], self.layer[0])):
                last = inner(c) + functional.interpolate(last, size=c.shape[-2:], mode="nearest")
                pyramid.insert(0, layer(last))
            p6 = self.p6(pyramid[-1])
            pyramid += [p6, self.p7(functional.relu(p6))]
            n = x.shape[0]

            def flat(t: Any, k: int) -> Any:  # [N, 9k, H, W] -> [N, H*W*9, k]
                return t.view(n, 9, k, t.shape[-2], t.shape[-1]).permute(0, 3, 4, 1, 2).reshape(n, -1, k)

            logits = torch.cat([flat(self.cls_head(p), cfg.num_classes) for p in pyramid], dim=1)
            codes = torch.cat([flat(self.box_head(p), 4) for p in pyramid], dim=1)
            # As slices and one concat: OpenVINO's INT8 transformations fail on the stack of
            # single columns (2026.4).
            xy = codes[..., :2] * self.size + self.centre
            wh = torch.exp(torch.clamp(codes[..., 2:], max=BBOX_CLIP)) * self.size
            return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1), torch.sigmoid(logits)

    return RetinaNet()


register_seeded("retinanet", "detection", "RetinaNet, ResNeXt-50 32x4d FPN, 800x800, 264 classes "
                "(MLPerf Inference's detector)", lambda: retinanet(RETINANET), ["boxes", "scores"],
                800, 264, 37_128_876, 402.42, suite_batch=2, calibration_samples=32,
                quick_stand_in="retinanet-512")
register_seeded("retinanet-512", "detection", "retinanet at 512x512 (49,104 anchors; batch norms "
                "set at that size): the suite's --quick runs it in retinanet's place",
                lambda: retinanet(RETINANET_512), ["boxes", "scores"], 512, 264, 37_128_876, 164.628,
                suite_batch=2, calibration_samples=32)
register_seeded("retinanet-tiny", "detection", "RetinaNet layout, 1 block per stage, pyramid of 32, "
                "128x128, 5 classes (tests)", lambda: retinanet(RETINANET_TINY), ["boxes", "scores"],
                128, 5)
