"""MobileNet V2 and MobileNet V3-Large in torchvision's layouts (their block settings, widths,
activations and squeeze-excitation), 224x224, 1000 classes, seeded weights; and reduced variants
for tests. The V3-Large backbone is also DeepLabV3's (``deeplabv3``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visionbench.fidelity import DEPTHWISE_INT8_MIN_SNR_DB
from visionbench.models import seeded_torch
from visionbench.models.seeded_torch import register_seeded


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: to a multiple of 8, never below 90% of ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@dataclass(frozen=True)
class MobileNetConfig:
    width: float = 1.0
    image_size: int = 224
    num_classes: int = 1000
    #: Dilate the last stage instead of striding (output stride 16), as DeepLabV3 does.
    dilated: bool = False


MOBILENET = MobileNetConfig()
MOBILENET_TINY = MobileNetConfig(width=0.25, image_size=64, num_classes=10)
#: 2: residual branches scaled down at initialisation, and the classifier reads its features'
#: principal directions (``seeded_torch``).
REVISION = 2

#: MobileNet V2's inverted residual settings: expansion, channels, repeats, first stride.
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))
#: MobileNet V3-Large's blocks: in, kernel, expanded, out, squeeze-excite, hard-swish, stride.
V3_LARGE = ((16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2),
            (24, 3, 72, 24, False, False, 1), (24, 5, 72, 40, True, False, 2),
            (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
            (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1),
            (80, 3, 184, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
            (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
            (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1),
            (160, 5, 960, 160, True, True, 1))


def modules() -> Any:
    """The module classes (torch is imported only when a model is built or run)."""
    torch = seeded_torch.import_torch()
    nn = torch.nn

    class ConvBNAct(nn.Sequential):
        def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                     act: type | None = nn.ReLU6, dilation: int = 1, eps: float = 1e-5) -> None:
            pad = (k - 1) // 2 * dilation
            layers: list[Any] = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation,
                                           groups=groups, bias=False),
                                 nn.BatchNorm2d(cout, eps=eps)]
            if act is not None:
                layers.append(act())
            super().__init__(*layers)

    class InvertedResidualV2(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = round(cin * expand)
            self.use_res = stride == 1 and cin == cout
            layers: list[Any] = []
            if expand != 1:
                layers.append(ConvBNAct(cin, hidden, 1))
            layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
                       nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, cfg: MobileNetConfig) -> None:
            super().__init__()
            cin = make_divisible(32 * cfg.width)
            last = make_divisible(1280 * max(1.0, cfg.width))
            feats: list[Any] = [ConvBNAct(3, cin, stride=2)]
            for t, c, n, s in V2_SETTINGS:
                cout = make_divisible(c * cfg.width)
                for i in range(n):
                    feats.append(InvertedResidualV2(cin, cout, s if i == 0 else 1, t))
                    cin = cout
            feats.append(ConvBNAct(cin, last, 1))
            self.features = nn.Sequential(*feats)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, cfg.num_classes))

        def forward(self, x: Any) -> Any:
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    class SqueezeExcitation(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            squeeze = make_divisible(channels // 4)
            self.fc1 = nn.Conv2d(channels, squeeze, 1)
            self.fc2 = nn.Conv2d(squeeze, channels, 1)
            self.relu = nn.ReLU()
            self.scale = nn.Hardsigmoid()

        def forward(self, x: Any) -> Any:
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * self.scale(self.fc2(self.relu(self.fc1(s))))

    class InvertedResidualV3(nn.Module):
        def __init__(self, cin: int, k: int, hidden: int, cout: int, se: bool, hs: bool,
                     stride: int, dilation: int) -> None:
            super().__init__()
            act = nn.Hardswish if hs else nn.ReLU
            self.use_res = stride == 1 and cin == cout
            layers: list[Any] = []
            if hidden != cin:
                layers.append(ConvBNAct(cin, hidden, 1, act=act, eps=0.001))
            layers.append(ConvBNAct(hidden, hidden, k, 1 if dilation > 1 else stride,
                                    groups=hidden, act=act, dilation=dilation, eps=0.001))
            if se:
                layers.append(SqueezeExcitation(hidden))
            layers.append(ConvBNAct(hidden, cout, 1, act=None, eps=0.001))
            self.block = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.block(x) if self.use_res else self.block(x)

    class MobileNetV3Large(nn.Module):
        def __init__(self, cfg: MobileNetConfig) -> None:
            super().__init__()

            def ch(c: int) -> int:
                return make_divisible(c * cfg.width)

            feats: list[Any] = [ConvBNAct(3, ch(16), 3, 2, act=nn.Hardswish, eps=0.001)]
            for i, (cin, k, hidden, cout, se, hs, s) in enumerate(V3_LARGE):
                dilation = 2 if cfg.dilated and i >= 12 else 1
                feats.append(InvertedResidualV3(ch(cin), k, ch(hidden), ch(cout), se, hs, s,
                                                dilation))
            self.out_channels = 6 * ch(160)
            feats.append(ConvBNAct(ch(160), self.out_channels, 1, act=nn.Hardswish, eps=0.001))
            self.features = nn.Sequential(*feats)
            last = make_divisible(1280 * cfg.width)
            self.classifier = nn.Sequential(nn.Linear(self.out_channels, last), nn.Hardswish(),
                                            nn.Dropout(0.2), nn.Linear(last, cfg.num_classes))

        def forward(self, x: Any) -> Any:
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    return ConvBNAct, MobileNetV2, MobileNetV3Large


def residual_branches(module: Any) -> list[Any]:
    """The last batch norm of each inverted residual block that adds its input back."""
    torch = seeded_torch.import_torch()
    out = []
    for block in module.features:
        if getattr(block, "use_res", False):
            norms = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            out.append(norms[-1])
    return out


def mobilenet_v2(cfg: MobileNetConfig) -> Any:
    return modules()[1](cfg)


def mobilenet_v3_large(cfg: MobileNetConfig) -> Any:
    return modules()[2](cfg)


register_seeded("mobilenet-v2", "classification", "MobileNet V2 (torchvision layout), 224x224, 1000 "
                "classes", lambda: mobilenet_v2(MOBILENET), ["logits"], 224, 1000, 3_504_872, 0.6015,
                suite_batch=64, branches=residual_branches,
                revision=REVISION, int8_min_snr_db=DEPTHWISE_INT8_MIN_SNR_DB)
register_seeded("mobilenet-v2-tiny", "classification", "MobileNet V2 blocks at width 0.25, 64x64, 10 "
                "classes (tests)", lambda: mobilenet_v2(MOBILENET_TINY), ["logits"], 64, 10,
                branches=residual_branches, revision=REVISION,
                int8_min_snr_db=DEPTHWISE_INT8_MIN_SNR_DB)
register_seeded("mobilenet-v3-large", "classification", "MobileNet V3-Large (torchvision layout), "
                "224x224, 1000 classes", lambda: mobilenet_v3_large(MOBILENET), ["logits"], 224, 1000,
                5_483_032, 0.4332, suite_batch=64, branches=residual_branches,
                revision=REVISION, int8_min_snr_db=DEPTHWISE_INT8_MIN_SNR_DB)
register_seeded("mobilenet-v3-tiny", "classification", "MobileNet V3-Large blocks at width 0.25, 64x64, "
                "10 classes (tests)", lambda: mobilenet_v3_large(MOBILENET_TINY), ["logits"], 64, 10,
                branches=residual_branches, revision=REVISION,
                int8_min_snr_db=DEPTHWISE_INT8_MIN_SNR_DB)
