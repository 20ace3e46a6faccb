"""The FID feature extractor shipped with simbench: a small classifier per data set.

FID needs features in which real and generated images can be compared. Inception-v3
(Heusel et al. 2017) is the usual choice but needs 100 MB of downloaded weights and knows
nothing of digits; like the MNIST "FID" used in many GAN papers, we train a small CNN on the
real training set (``simbench train-fid-net mnist``) and ship its weights as package data
(``simbench/gan/weights/fidnet_<dataset>.pt``, float16, ~200 KB), so FID works offline.
Its 64-unit penultimate layer gives the features; its softmax gives the classifier score
and the class coverage. Images enter in the GAN range [-1, 1].
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FEATURES = 64


class FidNet(nn.Module):
    """conv(32)-pool-conv(64)-pool-linear(64)-linear(classes); ``features`` is the 64-d layer."""

    def __init__(self, shape, num_classes: int = 10) -> None:
        super().__init__()
        c, h, w = (int(s) for s in shape)
        self.shape = (c, h, w)
        self.num_classes = int(num_classes)
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 32 * (h // 4) * (w // 4)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def weights_path(dataset: str) -> Path:
    return WEIGHTS_DIR / f"fidnet_{dataset}.pt"


class FidNetMissing(ValueError):
    """No shipped FID network for this data set."""


def load_fid_net(dataset: str, path: str | Path | None = None) -> FidNet:
    """The shipped (or given) FID network of ``dataset``, in eval mode, float32."""
    path = Path(path) if path is not None else weights_path(dataset)
    if not path.is_file():
        raise FidNetMissing(f"fid: no FID network for dataset {dataset} at {path}; "
                            f"train one with `simbench train-fid-net {dataset}`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = FidNet(tuple(blob["shape"]), int(blob["num_classes"]))
    net.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    return net.eval()


def train_fid_net(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                  num_classes: int, epochs: int = 3, batch_size: int = 128, lr: float = 1e-3,
                  seed: int = 0, log=print) -> tuple[FidNet, float]:
    """Train a FidNet on images in [-1, 1]; returns the net and its test accuracy."""
    torch.manual_seed(seed)
    net = FidNet(tuple(x.shape[1:]), num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps = math.ceil(len(x) / batch_size)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=gen)
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        acc = accuracy(net, x_test, y_test)
        log(f"epoch {epoch + 1}/{epochs}: test accuracy {acc:.4f}")
    return net.eval(), accuracy(net, x_test, y_test)


@torch.no_grad()
def accuracy(net: FidNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    correct = sum(int((net(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(x), 1000))
    return correct / max(1, len(y))


def save_fid_net(net: FidNet, path: str | Path, meta: dict | None = None) -> Path:
    """Save as float16 (halves the size; features change by < 1e-3)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"shape": list(net.shape), "num_classes": net.num_classes,
                "state": {k: v.half() for k, v in net.state_dict().items()}, "meta": meta or {}}, path)
    return path
