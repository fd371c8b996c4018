"""The networks of the paper's deep-net study, in plain PyTorch.

Both end in a linear classifier without bias, ``logits = W h`` (``model.classifier``, a
``torch.nn.Linear(d, k, bias=False)``), so that the last layer is the unconstrained features
model of docs/theory.md §1: ``h`` is the penultimate feature, ``W`` (k x d) the classifiers.

- :class:`MLP`: ``depth`` blocks ``Linear -> BatchNorm1d -> ReLU`` of ``width`` units (the paper:
  6 x 2048), then the classifier. The features are post-ReLU, hence non-negative.
- :func:`resnet18`: the CIFAR variant of ResNet-18 (He et al., 2016): a 3x3 stem without
  max-pooling, four stages of two basic blocks (64, 128, 256, 512 channels), global average
  pooling, then the classifier on the 512 pooled features.
"""

from __future__ import annotations

import torch
from torch import nn

#: Model names accepted by :func:`build_model`.
MODELS = ("mlp", "resnet18")


class MLP(nn.Module):
    """``depth`` x (Linear, BatchNorm1d, ReLU) blocks of ``width`` units, classifier without bias.

    Parameters
    ----------
    in_features : int
        Input size (images are flattened).
    k : int
        Number of classes.
    width, depth : int
        Hidden width and number of hidden blocks (the paper: 2048 and 6).
    batchnorm : bool
        Put a BatchNorm1d between each Linear and ReLU (the paper does).
    """

    def __init__(
        self, in_features: int, k: int, *, width: int = 2048, depth: int = 6, batchnorm: bool = True
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_features
        for _ in range(depth):
            layers.append(nn.Linear(size, width))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            size = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(size, k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``W h(x)``, shape (batch, k)."""
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and ReLU, and an identity (or 1x1) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``ReLU(bn2(conv2(ReLU(bn1(conv1 x)))) + shortcut(x))``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem, stages of 2 basic blocks, average pooling, classifier.

    Parameters
    ----------
    k : int
        Number of classes.
    in_channels : int
        Image channels (3 for CIFAR-10, 1 for MNIST-like data).
    """

    def __init__(self, k: int, in_channels: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [
            nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        ]
        size = 64
        for channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(size, channels, stride), BasicBlock(channels, channels, 1)]
            size = channels
        blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(512, k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``W h(x)``, shape (batch, k)."""
        return self.classifier(self.features(x))


def resnet18(k: int, in_channels: int = 3) -> ResNet18:
    """The CIFAR ResNet-18 with ``k`` classes (see :class:`ResNet18`)."""
    return ResNet18(k, in_channels)


def build_model(
    name: str, input_shape: tuple[int, ...], k: int, *, width: int = 2048, depth: int = 6
) -> nn.Module:
    """``"mlp"`` (on the flattened input) or ``"resnet18"`` (on (channels, h, w) images)."""
    if name == "mlp":
        size = 1
        for s in input_shape:
            size *= s
        return MLP(size, k, width=width, depth=depth)
    channels = input_shape[0] if len(input_shape) == 3 else 1
    return resnet18(k, channels)
