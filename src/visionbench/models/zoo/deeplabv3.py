"""DeepLabV3 on a MobileNet V3-Large backbone (torchvision's ``deeplabv3_mobilenet_v3_large``):
the backbone's last stage dilated instead of strided (output stride 16), atrous spatial pyramid
pooling (rates 12, 24, 36, and the image-level pooling branch) of 256 channels, a 3x3 and a 1x1
convolution to 21 classes (Pascal VOC), and the bilinear upsampling to the input's size inside
the graph; 512x512 input (UL Procyon's DeepLab V3 runs 513x513 on MobileNet V2: a MobileNet
backbone as there, at a size divisible by 16); seeded weights. Output ``logits`` [N, 21, 512, 512];
the mask is their argmax."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visionbench.fidelity import DEPTHWISE_INT8_MIN_SNR_DB
from visionbench.models import seeded_torch
from visionbench.models.seeded_torch import register_seeded
from visionbench.models.zoo.mobilenet import MobileNetConfig, mobilenet_v3_large


@dataclass(frozen=True)
class DeepLabConfig:
    backbone_width: float = 1.0
    image_size: int = 512
    aspp: int = 256
    rates: tuple[int, int, int] = (12, 24, 36)
    num_classes: int = 21


DEEPLAB = DeepLabConfig()
DEEPLAB_TINY = DeepLabConfig(backbone_width=0.25, image_size=128, aspp=32, rates=(2, 4, 6),
                             num_classes=5)


def deeplabv3(cfg: DeepLabConfig) -> Any:
    torch = seeded_torch.import_torch()
    nn = torch.nn
    functional = nn.functional

    def conv_bn_relu(cin: int, cout: int, k: int, dilation: int = 1) -> Any:
        pad = (k - 1) // 2 * dilation
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU())

    class ASPPPooling(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.conv = conv_bn_relu(cin, cfg.aspp, 1)

        def forward(self, x: Any) -> Any:
            y = self.conv(functional.adaptive_avg_pool2d(x, 1))
            return functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    class DeepLabV3(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            backbone = mobilenet_v3_large(MobileNetConfig(width=cfg.backbone_width, dilated=True))
            self.backbone = backbone.features
            cin = backbone.out_channels
            self.branches = nn.ModuleList([conv_bn_relu(cin, cfg.aspp, 1),
                                           *(conv_bn_relu(cin, cfg.aspp, 3, r) for r in cfg.rates),
                                           ASPPPooling(cin)])
            self.project = nn.Sequential(conv_bn_relu(5 * cfg.aspp, cfg.aspp, 1), nn.Dropout(0.5))
            self.head = nn.Sequential(conv_bn_relu(cfg.aspp, cfg.aspp, 3),
                                      nn.Conv2d(cfg.aspp, cfg.num_classes, 1))

        def forward(self, x: Any) -> Any:
            f = self.backbone(x)
            y = self.project(torch.cat([b(f) for b in self.branches], dim=1))
            return functional.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear",
                                          align_corners=False)

    return DeepLabV3()


register_seeded("deeplabv3", "segmentation", "DeepLabV3, MobileNet V3-Large backbone (output stride "
                "16), 512x512, 21 VOC classes", lambda: deeplabv3(DEEPLAB), ["logits"], 512, 21,
                11_025_477, 19.652, suite_batch=8, calibration_samples=64,
                int8_min_snr_db=DEPTHWISE_INT8_MIN_SNR_DB)
register_seeded("deeplabv3-tiny", "segmentation", "DeepLabV3 layout on a MobileNet V3 of width 0.25, "
                "ASPP of 32, 128x128, 5 classes (tests)", lambda: deeplabv3(DEEPLAB_TINY), ["logits"],
                128, 5, int8_min_snr_db=DEPTHWISE_INT8_MIN_SNR_DB)
