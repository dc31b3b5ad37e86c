"""ResNet-50 v1.5 (torchvision / MLPerf topology) with deterministic seeded weights.

Weights live in a dict keyed exactly as torchvision's ``resnet50().state_dict()``, so the same
builder serves our seeded weights and a user's checkpoint. Batch-norm statistics are set from a
forward pass over a few synthetic images (data-dependent initialisation): without that, a random
ResNet maps every input to the same class, and precision agreement tests would prove nothing.
Residual branches start scaled down (each bottleneck's last batch norm) and the classifier reads the
directions in which the features differ between images (``seeding``), so that the seeded network is about as
robust to rounding as a trained one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from visionbench.data.synthetic import images
from visionbench.models import seeding

BN_EPS = 1e-5


@dataclass(frozen=True)
class ResNetConfig:
    """Shape of the network; the default is ResNet-50 v1.5 at 224x224."""

    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    image_size: int = 224
    num_classes: int = 1000

    @property
    def tag(self) -> str:
        b = "".join(str(n) for n in self.blocks)
        return f"b{b}-w{self.width}-s{self.image_size}-c{self.num_classes}"


RESNET50 = ResNetConfig()
#: A reduced variant for fast tests: same block structure, fewer blocks, thinner, smaller input.
RESNET50_TINY = ResNetConfig(blocks=(1, 1, 1, 1), width=8, image_size=64, num_classes=100)


@dataclass(frozen=True)
class Conv:
    key: str  # state_dict prefix of the conv, e.g. "layer1.0.conv2"
    bn: str  # state_dict prefix of its batch norm
    stride: int
    pad: int


@dataclass(frozen=True)
class Block:
    prefix: str
    planes: int
    convs: tuple[Conv, Conv, Conv]
    downsample: Conv | None


def layout(cfg: ResNetConfig) -> tuple[Conv, list[Block]]:
    """The stem and the bottleneck blocks, named as torchvision names them."""
    stem = Conv("conv1", "bn1", 2, 3)
    blocks: list[Block] = []
    inplanes = cfg.width
    for stage, n in enumerate(cfg.blocks):
        planes = cfg.width * 2**stage
        for i in range(n):
            p = f"layer{stage + 1}.{i}"
            stride = 2 if (i == 0 and stage > 0) else 1  # v1.5: stride on the 3x3 conv
            ds = None
            if i == 0 and (stride != 1 or inplanes != planes * 4):
                ds = Conv(f"{p}.downsample.0", f"{p}.downsample.1", stride, 0)
            convs = (
                Conv(f"{p}.conv1", f"{p}.bn1", 1, 0),
                Conv(f"{p}.conv2", f"{p}.bn2", stride, 1),
                Conv(f"{p}.conv3", f"{p}.bn3", 1, 0),
            )
            blocks.append(Block(p, planes, convs, ds))
            inplanes = planes * 4
    return stem, blocks


def weight_shapes(cfg: ResNetConfig) -> dict[str, tuple[int, ...]]:
    """Every state_dict tensor's shape (torchvision's keys; num_batches_tracked left out)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(c: Conv, cin: int, cout: int, k: int) -> None:
        shapes[f"{c.key}.weight"] = (cout, cin, k, k)
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{c.bn}.{s}"] = (cout,)

    stem, blocks = layout(cfg)
    conv(stem, 3, cfg.width, 7)
    inplanes = cfg.width
    for b in blocks:
        planes = b.planes
        c1, c2, c3 = b.convs
        conv(c1, inplanes, planes, 1)
        conv(c2, planes, planes, 3)
        conv(c3, planes, planes * 4, 1)
        if b.downsample is not None:
            conv(b.downsample, inplanes, planes * 4, 1)
        inplanes = planes * 4
    shapes["fc.weight"] = (cfg.num_classes, inplanes)
    shapes["fc.bias"] = (cfg.num_classes,)
    return shapes


def parameter_count(cfg: ResNetConfig) -> int:
    """Learnable parameters (batch-norm running statistics excluded), as torch counts them."""
    return sum(
        int(np.prod(s))
        for k, s in weight_shapes(cfg).items()
        if not k.endswith(("running_mean", "running_var"))
    )


def macs(cfg: ResNetConfig) -> int:
    """Multiply-accumulates of convolutions and the classifier for one image."""
    stem, blocks = layout(cfg)
    shapes = weight_shapes(cfg)
    total = 0
    size = cfg.image_size

    def out(size: int, c: Conv, k: int) -> int:
        return (size + 2 * c.pad - k) // c.stride + 1

    o = out(size, stem, 7)
    total += o * o * int(np.prod(shapes["conv1.weight"]))
    size = (o + 2 - 3) // 2 + 1  # max pool
    for b in blocks:
        s_in = size
        for c in b.convs:
            k = shapes[f"{c.key}.weight"][2]
            size = out(size, c, k)
            total += size * size * int(np.prod(shapes[f"{c.key}.weight"]))
        if b.downsample is not None:
            so = out(s_in, b.downsample, 1)
            total += so * so * int(np.prod(shapes[f"{b.downsample.key}.weight"]))
    total += int(np.prod(shapes["fc.weight"]))
    return total


# ---------------------------------------------------------------------------------------------
# A small numpy forward pass, used once to set batch-norm statistics and the classifier from data.


def _conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    n, c, _, _ = x.shape
    o, _, k, _ = w.shape
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    ho, wo = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
    y = cols @ w.reshape(o, -1).T
    return np.ascontiguousarray(y.reshape(n, ho, wo, o).transpose(0, 3, 1, 2))


def _maxpool(x: np.ndarray) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(4, 5))


def _bn(x: np.ndarray, sd: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    shape = (1, -1, 1, 1)
    scale = sd[f"{prefix}.weight"] / np.sqrt(sd[f"{prefix}.running_var"] + BN_EPS)
    return (x - sd[f"{prefix}.running_mean"].reshape(shape)) * scale.reshape(shape) + sd[
        f"{prefix}.bias"
    ].reshape(shape)


def features(
    sd: dict[str, np.ndarray], cfg: ResNetConfig, x: np.ndarray, calibrate: bool = False
) -> np.ndarray:
    """Pooled features [N, channels] for NCHW float32 input. With ``calibrate`` each batch norm
    first takes its running statistics from the batch it sees."""

    def conv_bn(h: np.ndarray, c: Conv) -> np.ndarray:
        y = _conv(h, sd[f"{c.key}.weight"], c.stride, c.pad)
        if calibrate:
            sd[f"{c.bn}.running_mean"] = y.mean(axis=(0, 2, 3)).astype(np.float32)
            sd[f"{c.bn}.running_var"] = y.var(axis=(0, 2, 3)).astype(np.float32)
        return _bn(y, sd, c.bn)

    stem, blocks = layout(cfg)
    h = _maxpool(np.maximum(conv_bn(x, stem), 0))
    for b in blocks:
        c1, c2, c3 = b.convs
        y = np.maximum(conv_bn(h, c1), 0)
        y = np.maximum(conv_bn(y, c2), 0)
        y = conv_bn(y, c3)
        idn = conv_bn(h, b.downsample) if b.downsample is not None else h
        h = np.maximum(y + idn, 0)
    return h.mean(axis=(2, 3))


def forward(sd: dict[str, np.ndarray], cfg: ResNetConfig, x: np.ndarray) -> np.ndarray:
    """Logits for NCHW float32 input."""
    return features(sd, cfg, x) @ sd["fc.weight"].T + sd["fc.bias"]


def seeded_weights(cfg: ResNetConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic weights: He-normal convolutions, residual branches scaled by
    ``seeding.RESIDUAL_SCALE``; batch norms set from synthetic images with content, and a classifier
    that reads the directions in which those images' features differ
    (``seeding.principal_classifier``)."""
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}
    branch = seeding.RESIDUAL_SCALE
    for key, shape in weight_shapes(cfg).items():
        if len(shape) == 4:
            fan_out = shape[0] * shape[2] * shape[3]
            w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_out)
        elif key.startswith("fc."):
            continue
        elif key.endswith(".weight"):
            w = rng.uniform(0.5, 1.5, shape) * (branch if key.endswith("bn3.weight") else 1)
        elif key.endswith(".bias"):
            w = rng.normal(0.0, 0.1, shape) * (branch if key.endswith("bn3.bias") else 1)
        elif key.endswith("running_var"):
            w = np.ones(shape)
        else:
            w = np.zeros(shape)
        sd[key] = w.astype(np.float32)
    x = images(seeding.IMAGES, 3, cfg.image_size, cfg.image_size, seed + 1)
    sd["fc.weight"], sd["fc.bias"] = seeding.principal_classifier(
        features(sd, cfg, x, calibrate=True), cfg.num_classes, rng)
    return sd


def config_from_weights(arrays: dict[str, np.ndarray], image_size: int) -> ResNetConfig | None:
    """The ResNet v1.5 shape these torchvision-keyed weights fit exactly, or None."""
    try:
        width = int(arrays["conv1.weight"].shape[0])
        classes = int(arrays["fc.weight"].shape[0])
    except (KeyError, IndexError):
        return None
    blocks = []
    for stage in range(1, 5):
        n = 0
        while f"layer{stage}.{n}.conv1.weight" in arrays:
            n += 1
        blocks.append(n)
    cfg = ResNetConfig(tuple(blocks), width, image_size, classes)  # type: ignore[arg-type]
    expected = weight_shapes(cfg)
    if set(arrays) != set(expected):
        return None
    if any(tuple(arrays[k].shape) != s for k, s in expected.items()):
        return None
    return cfg
