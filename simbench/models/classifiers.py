"""Classifier architectures used by the seeds: logistic regression, MLP, seed 002's Keras
MNIST CNN and seed 003's GroupNorm ResNet."""

from __future__ import annotations

import math

import torch
from torch import nn


def _flat_dim(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def _rate(name: str, value) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


INITS = ("torch", "tf_tutorial")
"""Initial weights of ``mlp`` and ``cnn_fedavg``: ``torch`` is PyTorch's default (weights and
biases uniform within 1/sqrt(fan_in)); ``tf_tutorial`` is TensorFlow's MNIST tutorials of
McMahan et al.'s time ("Deep MNIST for Experts": ``weight_variable`` draws
``tf.truncated_normal(stddev=0.1)``, cut at two standard deviations, ``bias_variable`` is
``tf.constant(0.1)``). McMahan et al. 2017 do not state their initialisation."""


def _initialise(model: nn.Module, init: str) -> nn.Module:
    if init not in INITS:
        raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")
    if init == "tf_tutorial":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
                    nn.init.constant_(m.bias, 0.1)
    return model


def logistic(input_shape, num_classes):
    """Seed 003's ``logistics``: flatten + one linear layer (multinomial logistic regression).

    Parameters
    ----------
    input_shape : tuple
        Shape of one sample.
    num_classes : int
    """
    return nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(input_shape), num_classes))


def mlp(input_shape, num_classes, hidden=(128,), drop_rate=0.0, init="torch"):
    """Flatten, then ``Linear + ReLU (+ Dropout)`` per hidden size, then a linear classifier.

    Parameters
    ----------
    input_shape : tuple
    num_classes : int
    hidden : sequence of int
        Hidden layer widths.
    drop_rate : float
        Dropout after each hidden layer (0 = none).
    init : str
        Initial weights, one of :data:`INITS`.
    """
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden) if isinstance(hidden, (list, tuple)) else None
    if hidden is None or not all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= 2**20 for h in hidden):
        raise ValueError("hidden: expected a list of layer widths, whole numbers from 1 to 1048576")
    drop_rate = _rate("drop_rate", drop_rate)
    layers: list[nn.Module] = [nn.Flatten()]
    width = _flat_dim(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        if drop_rate:
            layers.append(nn.Dropout(drop_rate))
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return _initialise(nn.Sequential(*layers), init)


def cnn(input_shape, num_classes, drop_rate=0.25, last_drop_rate=0.5):
    """Keras' mnist_cnn.py (seed 002): conv32-3, conv64-3, maxpool 2, dropout, fc128, dropout, fc.

    1,199,882 parameters on ``(1, 28, 28)`` input with 10 classes.

    Parameters
    ----------
    input_shape : tuple
        ``(C, H, W)`` with ``H, W >= 6``.
    num_classes : int
    drop_rate : float
        Dropout after the pooling.
    last_drop_rate : float
        Dropout before the last layer.
    """
    if len(input_shape) != 3 or min(input_shape[1:]) < 6:
        raise ValueError(f"cnn needs (C, H, W) input with H, W >= 6, got {tuple(input_shape)}")
    drop_rate, last_drop_rate = _rate("drop_rate", drop_rate), _rate("last_drop_rate", last_drop_rate)
    c, h, w = input_shape
    feat = 64 * ((h - 4) // 2) * ((w - 4) // 2)
    return nn.Sequential(
        nn.Conv2d(c, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(drop_rate), nn.Flatten(), nn.Linear(feat, 128), nn.ReLU(), nn.Dropout(last_drop_rate),
        nn.Linear(128, num_classes),
    )


def cnn_fedavg(input_shape, num_classes, init="torch"):
    """McMahan et al. 2017's MNIST CNN: conv 5x5 32, maxpool 2, conv 5x5 64, maxpool 2, fc 512, fc.

    "A CNN with two 5x5 convolution layers (the first with 32 channels, the second with 64,
    each followed with 2x2 max pooling), a fully connected layer with 512 units and ReLu
    activation, and a final softmax output layer (1,663,370 total parameters)" (section 3).
    The convolutions keep the image size ("same" padding, as the TensorFlow tutorial model the
    paper's count matches) and are followed by a ReLU; on ``(1, 28, 28)`` input with 10
    classes this has the paper's 1,663,370 parameters.

    Parameters
    ----------
    input_shape : tuple
        ``(C, H, W)`` with ``H, W >= 4``.
    num_classes : int
    init : str
        Initial weights, one of :data:`INITS`.
    """
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ValueError(f"cnn_fedavg needs (C, H, W) input with H, W >= 4, got {tuple(input_shape)}")
    c, h, w = input_shape
    return _initialise(nn.Sequential(
        nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 512), nn.ReLU(), nn.Linear(512, num_classes),
    ), init)


def _gn(channels: int, group_channels: int) -> nn.GroupNorm:
    """GroupNorm with about ``channels // group_channels`` groups; GroupNorm needs a divisor
    of ``channels``, so take the largest one not above that."""
    groups = max(1, channels // group_channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride, gc, drop):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _gn(cout, gc), nn.ReLU(),
            nn.Dropout(drop) if drop else nn.Identity(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _gn(cout, gc))
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _gn(cout, gc))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, mid, stride, gc, drop):
        super().__init__()
        cout = mid * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), _gn(mid, gc), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), _gn(mid, gc), nn.ReLU(),
            nn.Dropout(drop) if drop else nn.Identity(),
            nn.Conv2d(mid, cout, 1, bias=False), _gn(cout, gc))
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _gn(cout, gc))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def resnet_gn(input_shape, num_classes, depth=18, width=64, group_channels=32, drop_rate=0.1, last_drop_rate=0.5):
    """Seed 003's ResNet with GroupNorm in place of BatchNorm, CIFAR-style 3×3 stem.

    Parameters
    ----------
    input_shape : tuple
        ``(C, H, W)``.
    num_classes : int
    depth : {18, 50}
        18 uses basic blocks [2, 2, 2, 2]; 50 uses bottlenecks [3, 4, 6, 3].
    width : int
        Channels of the stem and first stage (64 in the seed; tests use 8).
    group_channels : int
        Channels per GroupNorm group (groups = channels // group_channels).
    drop_rate : float
        Dropout inside each block.
    last_drop_rate : float
        Dropout before the classifier.
    """
    if depth not in (18, 50):
        raise ValueError(f"depth must be 18 or 50, got {depth}")
    if len(input_shape) != 3 or int(width) < 1 or int(group_channels) < 1:
        raise ValueError("resnet_gn needs (C, H, W) input, width >= 1 and group_channels >= 1")
    drop_rate, last_drop_rate = _rate("drop_rate", drop_rate), _rate("last_drop_rate", last_drop_rate)
    block, counts = (_Basic, (2, 2, 2, 2)) if depth == 18 else (_Bottleneck, (3, 4, 6, 3))
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), _gn(width, group_channels), nn.ReLU()]
    cin = width
    for stage, n in enumerate(counts):
        mid = width * 2**stage
        for i in range(n):
            layers.append(block(cin, mid, 2 if (i == 0 and stage > 0) else 1, group_channels, drop_rate))
            cin = mid * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(last_drop_rate), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)
