"""ViT-Base/16 (Dosovitskiy et al., torchvision's ``vit_b_16`` shape): 16x16 patches of a 224x224
image, a class token, 12 pre-norm encoder blocks of width 768 with 12 heads and an MLP of 3072,
1000 classes; seeded weights. The transformer of the suite: attention is written as matrix
products and a softmax (no fused kernel), so every engine and quantizer sees the same graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visionbench.models import seeded_torch
from visionbench.models.seeded_torch import register_seeded


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 224
    patch: int = 16
    layers: int = 12
    width: int = 768
    heads: int = 12
    mlp: int = 3072
    num_classes: int = 1000


VIT_B16 = ViTConfig()
VIT_TINY = ViTConfig(image_size=64, patch=16, layers=2, width=64, heads=2, mlp=128, num_classes=10)
#: 2: residual branches scaled down at initialisation, and the classifier reads its features'
#: principal directions (``seeded_torch``).
REVISION = 2


def vit(cfg: ViTConfig) -> Any:
    torch = seeded_torch.import_torch()
    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
            self.proj = nn.Linear(cfg.width, cfg.width)
            self.scale = (cfg.width // cfg.heads) ** -0.5

        def forward(self, x: Any) -> Any:
            n, t, c = x.shape
            qkv = self.qkv(x).reshape(n, t, 3, cfg.heads, c // cfg.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(cfg.width, eps=1e-6)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(cfg.width, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(cfg.width, cfg.mlp), nn.GELU(),
                                     nn.Linear(cfg.mlp, cfg.width))

        def forward(self, x: Any) -> Any:
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class VisionTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            tokens = (cfg.image_size // cfg.patch) ** 2
            self.conv_proj = nn.Conv2d(3, cfg.width, cfg.patch, cfg.patch)
            self.class_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
            self.pos_embedding = nn.Parameter(torch.zeros(1, tokens + 1, cfg.width))
            self.layers = nn.Sequential(*[Block() for _ in range(cfg.layers)])
            self.ln = nn.LayerNorm(cfg.width, eps=1e-6)
            self.head = nn.Linear(cfg.width, cfg.num_classes)

        def forward(self, x: Any) -> Any:
            x = self.conv_proj(x).flatten(2).transpose(1, 2)
            cls = self.class_token.expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1) + self.pos_embedding
            return self.head(self.ln(self.layers(x))[:, 0])

    return VisionTransformer()


def residual_branches(module: Any) -> list[Any]:
    """The last linear layer of each block's attention and MLP branches."""
    return [layer for block in module.layers for layer in (block.attn.proj, block.mlp[2])]


register_seeded("vit-b16", "classification", "ViT-Base/16, 224x224, 1000 classes (the transformer)",
                lambda: vit(VIT_B16), ["logits"], 224, 1000, 86_567_656, 35.128, transformer=True,
                suite_batch=16, calibration_samples=128, branches=residual_branches,
                revision=REVISION)
register_seeded("vit-tiny", "classification", "ViT blocks: 2 layers of width 64, 2 heads, 64x64, 10 "
                "classes (tests)", lambda: vit(VIT_TINY), ["logits"], 64, 10, transformer=True,
                branches=residual_branches, revision=REVISION)
