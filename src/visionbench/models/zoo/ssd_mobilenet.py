"""SSD-MobileNet v1 at 300x300 with COCO's 91 classes (90 and background): the detector of AIXPRT
and of MLPerf Inference v0.5 (TensorFlow's ``ssd_mobilenet_v1_coco``): a MobileNet V1 backbone
(depthwise-separable convolutions, ReLU6), feature maps at 19, 10, 5, 3, 2 and 1 cells (conv 11,
conv 13 and four extra layers), 1x1 box predictors, 3 anchors per cell on the first map and 6 on
the others (1917 in all), seeded weights.

Inside the graph: the box predictors, the box decoding (TensorFlow's box coder, scales 10, 10,
5, 5, against the anchors; codes in x, y, w, h order) and the class scores' sigmoid; outputs
``boxes`` [N, 1917, 4] (x1, y1, x2, y2 in input pixels) and ``scores`` [N, 1917, 91].
Non-maximum suppression is outside it.
Differences from TensorFlow's file: convolutions pad symmetrically (TensorFlow pads 'same', one
more pixel on the bottom and right for stride 2), the outputs are not post-processed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from visionbench.fidelity import DEPTHWISE_INT8_MIN_SNR_DB
from visionbench.models import seeded_torch
from visionbench.models.seeded_torch import register_seeded

#: MobileNet V1's depthwise-separable blocks: output channels, stride.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
          (512, 1), (512, 1), (1024, 2), (1024, 1))
#: The extra layers: 1x1 channels, then 3x3 stride-2 channels.
EXTRAS = ((256, 512), (128, 256), (128, 256), (64, 128))


@dataclass(frozen=True)
class SSDConfig:
    width: float = 1.0
    image_size: int = 300
    num_classes: int = 91
    min_scale: float = 0.2
    max_scale: float = 0.95


SSD = SSDConfig()
SSD_TINY = SSDConfig(width=0.25, image_size=96, num_classes=5)


def feature_sizes(image_size: int) -> list[int]:
    """Cells per side of the six feature maps (each 3x3 stride-2 convolution halves, rounding up)."""
    size = image_size
    for _ in range(4):  # stem and three strided blocks: conv 11 works at 1/16
        size = (size + 1) // 2
    sizes = []
    for _ in range(6):
        size = (size + 1) // 2 if sizes else size
        sizes.append(size)
    return sizes


def anchors(cfg: SSDConfig) -> tuple[np.ndarray, list[int]]:
    """TensorFlow's multiple-grid anchors (centre x, y, width, height; normalised) in the order
    the predictors emit them (cell by cell, then anchor), and the anchors per cell of each map."""
    sizes = feature_sizes(cfg.image_size)
    n = len(sizes)
    scales = [cfg.min_scale + (cfg.max_scale - cfg.min_scale) * i / (n - 1) for i in range(n)]
    scales.append(1.0)
    out, per_cell = [], []
    for i, f in enumerate(sizes):
        if i == 0:  # the lowest layer keeps three boxes
            shapes = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            shapes = [(scales[i], r) for r in (1.0, 2.0, 0.5, 3.0, 1 / 3)]
            shapes.append((math.sqrt(scales[i] * scales[i + 1]), 1.0))
        per_cell.append(len(shapes))
        wh = np.array([(s * math.sqrt(r), s / math.sqrt(r)) for s, r in shapes])
        cy, cx = np.meshgrid((np.arange(f) + 0.5) / f, (np.arange(f) + 0.5) / f, indexing="ij")
        centres = np.stack([cx.ravel(), cy.ravel()], axis=1)
        cells = np.concatenate([np.repeat(centres, len(shapes), axis=0),
                                np.tile(wh, (f * f, 1))], axis=1)
        out.append(cells)
    return np.concatenate(out).astype(np.float32), per_cell


def ssd_mobilenet(cfg: SSDConfig) -> Any:
    torch = seeded_torch.import_torch()
    nn = torch.nn

    def ch(c: int) -> int:
        return max(8, int(c * cfg.width))

    def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> Any:
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU6())

    class SSDMobileNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, cin = [conv_bn(3, ch(32), 3, 2)], ch(32)
            for c, s in BLOCKS:
                layers.append(nn.Sequential(conv_bn(cin, cin, 3, s, groups=cin),
                                            conv_bn(cin, ch(c), 1)))
                cin = ch(c)
            self.conv11 = nn.Sequential(*layers[:12])
            self.conv13 = nn.Sequential(*layers[12:])
            maps = [ch(512), ch(1024)]
            self.extras = nn.ModuleList()
            for mid, out in EXTRAS:
                self.extras.append(nn.Sequential(conv_bn(cin, ch(mid), 1), conv_bn(ch(mid), ch(out), 3, 2)))
                cin = ch(out)
                maps.append(cin)
            prior, self.per_cell = anchors(cfg)
            self.register_buffer("anchors", torch.tensor(prior), persistent=False)
            self.box = nn.ModuleList(nn.Conv2d(c, a * 4, 1) for c, a in zip(maps, self.per_cell, strict=True))
            self.cls = nn.ModuleList(nn.Conv2d(c, a * cfg.num_classes, 1)
                                     for c, a in zip(maps, self.per_cell, strict=True))

        def forward(self, x: Any) -> tuple[Any, Any]:
            f = self.conv11(x)
            maps = [f, self.conv13(f)]
            for extra in self.extras:
                maps.append(extra(maps[-1]))
            n = x.shape[0]
            codes = torch.cat([b(m).permute(0, 2, 3, 1).reshape(n, -1, 4)
                               for b, m in zip(self.box, maps, strict=True)], dim=1)
            logits = torch.cat([c(m).permute(0, 2, 3, 1).reshape(n, -1, cfg.num_classes)
                                for c, m in zip(self.cls, maps, strict=True)], dim=1)
            # Codes (tx, ty, tw, th) against anchors (cx, cy, w, h), as slices and one concat:
            # OpenVINO's INT8 transformations fail on the stack of single columns (2026.4).
            centre, size = self.anchors[:, :2], self.anchors[:, 2:]
            xy = codes[..., :2] / 10 * size + centre
            wh = torch.exp(codes[..., 2:] / 5) * size
            boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)
            return boxes * cfg.image_size, torch.sigmoid(logits)

    return SSDMobileNet()


register_seeded("ssd-mobilenet", "detection", "SSD-MobileNet v1, 300x300, 91 COCO classes, 1917 "
                "anchors (AIXPRT's and MLPerf v0.5's detector)", lambda: ssd_mobilenet(SSD),
                ["boxes", "scores"], 300, 91, 6_819_839, 2.4743, suite_batch=32,
                int8_min_snr_db=DEPTHWISE_INT8_MIN_SNR_DB)
register_seeded("ssd-mobilenet-tiny", "detection", "SSD-MobileNet v1 layout at width 0.25, 96x96, 5 "
                "classes (tests)", lambda: ssd_mobilenet(SSD_TINY), ["boxes", "scores"], 96, 5,
                int8_min_snr_db=DEPTHWISE_INT8_MIN_SNR_DB)
