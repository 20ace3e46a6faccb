"""Update compression on the push path: pure functions from a flat gradient to a payload.

``none``
    Send ``g`` dense (float32).
``adacomp`` (the default compressor of seed 002)
    Hardy, Le Merrer and Sericola, "Distributed deep learning on edge-devices: feasibility
    via adaptive compression", IEEE NCA 2017; reference code ``Hardy-c/AdaComp``
    (``Communication.py::encode_variables``, called from ``Worker.py``), which seed 002's
    ASGD reuses. Per layer (every weight and every bias tensor is its own layer), with n
    entries and ``c = compression_rate`` (the reference's flag, default 0.01)::

        k = max(1, floor(n * c))                 # int(max(1, len(value) * compression))
        send the k entries of the raw minibatch gradient largest in |g|, with their indices

    There is **no residual**: the worker's gradient variables are overwritten every step
    (``Worker.py``: ``grads_var[...].assign(grad)``), so what is not sent is dropped. The
    other half of AdaComp is the server's per-parameter staleness scaling, in
    :mod:`.ps_async` (``parameter_staleness``). ``compression_rate: 1`` sends the dense
    gradient (the reference's ``compression >= 1`` branch). Differences from the reference:
    the values travel as float32 with int32 indices (the reference pickles Python lists of
    float64 objects and ints, about 27 + 5 bytes per entry); ties in |g| are broken by
    ``torch.topk``, not by index. The committed ``encode_variables`` of the reference's
    last revision does not run (``range(len(nb_samples))`` on an int); its first revision,
    whose heap pops the k largest |g|, is the rule followed here.
``adacomp_chen``
    Chen et al., "AdaComp: Adaptive Residual Gradient Compression for Data-Parallel
    Distributed Training", AAAI 2018 (arXiv:1712.02679), Algorithm 1 -- a different method
    with the same name. Per layer (one parameter tensor), with ``dW`` the new gradient and
    ``residue`` what was left unsent::

        G = residue + dW                 # accumulated residual gradient
        H = G + dW                       # the latest gradient counts twice in the test
        split G and H into bins of L_T consecutive elements
        g_max(bin) = max_{k in bin} |G_k|          # self-adjusting, local threshold
        send G_k for every k with |H_k| >= g_max(bin(k))   (and G_k != 0)
        residue = G - sent

    Bin sizes: ``L_T = 50`` for convolutional layers and ``L_T = 500`` for fully connected
    layers, the values the paper uses (config ``adacomp_conv_bin`` / ``adacomp_fc_bin``).
    The paper also quantizes the sent values; ``adacomp_quantize: true`` sends them as
    ``sign * s`` with one scale ``s`` per layer (the mean |G| of the sent elements) and
    keeps the quantization error in the residue. The default sends exact float32 values.
``topk``
    Per layer, the ``k_fraction`` largest-magnitude entries of ``acc = residual + g`` (at
    least one), keeping the rest as a residual (error feedback, Aji & Heafield 2017): the
    error-feedback counterpart of Hardy's ``adacomp``.
``random_k``
    Per layer, ``k_fraction`` entries of ``acc`` chosen uniformly at random (seeded
    generator passed in), same residual accumulation.

The residual compressors (``adacomp_chen``, ``topk``, ``random_k``) keep what they did not
send and add it to the next gradient, so nothing is lost, only delayed: with
``acc = residual + g`` they return ``(payload, new_residual)`` with

    decompress(payload) + new_residual == acc          (exactly, element by element)

``none`` and ``adacomp`` return no residual.

Wire payload of the sparse methods: ``idx`` (int32 positions in the flat vector) and
``val`` (float32), 8 bytes per sent entry, or ``sgn`` (int8) plus ``scale`` (float32 per
layer) and ``lay`` (int32 count of sent entries per layer) when quantized. The simulator
charges the real encoded size of these tensors, so compression shows up in simulated time
and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.schema import ConfigError

COMPRESSIONS = ("none", "adacomp", "adacomp_chen", "topk", "random_k")


@dataclass(frozen=True)
class Layer:
    """One parameter tensor's place in the flat vector and its kind (``conv`` or ``fc``)."""

    name: str
    start: int
    stop: int
    kind: str

    @property
    def numel(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class CompressionParams:
    """Knobs of the push-path compression, shared by every algorithm that pushes gradients."""

    compression: str = field(default="none", metadata={"choices": COMPRESSIONS})
    """Update compression on the push path: none, adacomp (Hardy et al. 2017, seed 002), adacomp_chen (Chen et al. 2018), topk, random_k."""
    compression_rate: float = field(default=0.01, metadata={"check": (lambda x: 0 < x <= 1, "must be in (0, 1]")})
    """adacomp (Hardy): fraction of each layer's entries sent per push, k = max(1, floor(n * rate)); 1 sends the dense gradient (reference flag ``compression_rate``)."""
    adacomp_conv_bin: int = field(default=50, metadata={"check": (lambda x: x >= 1, "must be >= 1")})
    """adacomp_chen: bin size L_T of convolutional layers (paper: 50)."""
    adacomp_fc_bin: int = field(default=500, metadata={"check": (lambda x: x >= 1, "must be >= 1")})
    """adacomp_chen: bin size L_T of fully connected layers (paper: 500)."""
    adacomp_quantize: bool = False
    """adacomp_chen: send sign * per-layer scale instead of float32 values (quantization error stays in the residue)."""
    k_fraction: float = field(default=0.01, metadata={"check": (lambda x: 0 < x <= 1, "must be in (0, 1]")})
    """topk / random_k: fraction of each layer's entries sent per push."""


def check_compression(name: str) -> str:
    """``name`` if it is a known compression, else a one-line ConfigError."""
    if name not in COMPRESSIONS:
        raise ConfigError(f"compression: {name!r} is not allowed; allowed: {', '.join(COMPRESSIONS)}")
    return name


# -- the selections ---------------------------------------------------------------------------
def hardy_k(numel: int, rate: float) -> int:
    """Entries of a layer of ``numel`` entries that Hardy's AdaComp sends: ``max(1, floor(numel * rate))``."""
    return max(1, int(numel * rate))


def hardy_select(grad: torch.Tensor, layers: list[Layer], rate: float) -> torch.Tensor:
    """Hardy's AdaComp selection: per layer, the positions (in the flat vector, ascending
    within each layer) of its ``hardy_k`` entries largest in magnitude."""
    parts = []
    for layer in layers:
        g = grad[layer.start:layer.stop]
        local = g.abs().topk(hardy_k(layer.numel, rate), sorted=False).indices.sort().values
        parts.append(local + layer.start)
    return torch.cat(parts)


def chen_mask(acc: torch.Tensor, grad: torch.Tensor, bin_size: int) -> torch.Tensor:
    """Chen et al.'s AdaComp selection for one layer: ``|acc + grad| >= max |acc|`` within each bin.

    ``acc`` is G = residue + dW, ``grad`` is dW. Returns a bool mask of ``acc``'s shape.
    """
    n = acc.numel()
    pad = (-n) % bin_size
    g = torch.nn.functional.pad(acc.abs(), (0, pad)).view(-1, bin_size)
    h = torch.nn.functional.pad((acc + grad).abs(), (0, pad)).view(-1, bin_size)
    gmax = g.max(dim=1, keepdim=True).values
    mask = (h >= gmax).reshape(-1)[:n]
    return mask & (acc != 0)


def _topk_mask(acc: torch.Tensor, frac: float) -> torch.Tensor:
    k = max(1, int(round(frac * acc.numel())))
    mask = torch.zeros(acc.numel(), dtype=torch.bool, device=acc.device)
    mask[acc.abs().topk(k, sorted=False).indices] = True
    return mask


def _random_mask(acc: torch.Tensor, frac: float, gen: torch.Generator) -> torch.Tensor:
    k = max(1, int(round(frac * acc.numel())))
    mask = torch.zeros(acc.numel(), dtype=torch.bool, device=acc.device)
    mask[torch.randperm(acc.numel(), generator=gen).to(acc.device)[:k]] = True
    return mask


def compress(grad: torch.Tensor, residual: torch.Tensor | None, layers: list[Layer], params: CompressionParams,
             gen: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Compress flat ``grad`` (with the previous ``residual``) into wire tensors.

    Parameters
    ----------
    grad : 1-D float tensor
        The new gradient (not modified).
    residual : 1-D tensor or None
        What earlier pushes left unsent (None = zeros).
    layers : list of Layer
        Per-layer slices of the flat vector (``Learner.layers()``), covering it in order.
    params : CompressionParams
    gen : torch.Generator, optional
        The node's own generator (``random_k`` only).

    Returns
    -------
    (payload, new_residual)
        ``payload`` are the tensors to put in a message (:func:`decompress` inverts it);
        ``new_residual`` is None for ``none`` and ``adacomp`` (they keep no residual).
    """
    method = check_compression(params.compression)
    grad = grad.detach().float()
    if method == "none" or (method == "adacomp" and params.compression_rate >= 1):
        return {"g": grad.clone()}, None
    if method == "adacomp":  # no residual: what is not sent is dropped
        idx = hardy_select(grad, layers, params.compression_rate)
        return {"idx": idx.to(torch.int32), "val": grad[idx].clone()}, None
    acc = grad.clone() if residual is None else residual + grad
    idx_parts, val_parts, counts, scales, signs = [], [], [], [], []
    for layer in layers:
        a = acc[layer.start:layer.stop]
        if method == "adacomp_chen":
            bin_size = params.adacomp_conv_bin if layer.kind == "conv" else params.adacomp_fc_bin
            mask = chen_mask(a, grad[layer.start:layer.stop], bin_size)
        elif method == "topk":
            mask = _topk_mask(a, params.k_fraction)
        else:
            if gen is None:
                raise ValueError("random_k needs a generator")
            mask = _random_mask(a, params.k_fraction, gen)
        local = mask.nonzero().reshape(-1)
        sent = a[local]
        if method == "adacomp_chen" and params.adacomp_quantize:
            scale = sent.abs().mean() if len(sent) else torch.zeros((), device=a.device)
            sgn = torch.sign(sent)
            sent = sgn * scale
            scales.append(scale.reshape(1))
            signs.append(sgn.to(torch.int8))
            counts.append(len(local))
        a[local] -= sent  # acc becomes the new residual in place
        idx_parts.append(local + layer.start)
        val_parts.append(sent)
    idx = torch.cat(idx_parts).to(torch.int32)
    if method == "adacomp_chen" and params.adacomp_quantize:
        payload = {"idx": idx, "sgn": torch.cat(signs), "scale": torch.cat(scales).float(),
                   "lay": torch.tensor(counts, dtype=torch.int32)}
    else:
        payload = {"idx": idx, "val": torch.cat(val_parts).float()}
    return payload, acc


def decompress(payload: dict[str, torch.Tensor], numel: int) -> torch.Tensor:
    """The dense flat update a payload stands for."""
    if "g" in payload:
        return payload["g"].float()
    idx = payload["idx"].long()
    out = torch.zeros(numel, dtype=torch.float32, device=idx.device)  # where the receiver's model lives
    if "val" in payload:
        vals = payload["val"].float()
    else:
        vals = payload["sgn"].float() * torch.repeat_interleave(payload["scale"].float(), payload["lay"].long())
    out.index_add_(0, idx, vals)
    return out


def split_payload(payload: dict[str, torch.Tensor], ranges: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    """Cut a whole-model payload into one payload per contiguous range ``[a, b)`` of the flat
    vector (a sharded parameter server's slices), each indexed from its range's start.

    ``decompress(parts[j], b - a) == decompress(payload, n)[a:b]`` for every part. A quantized
    payload keeps every layer's scale in every part (with that part's per-layer counts).
    """
    if "g" in payload:
        return [{"g": payload["g"][a:b]} for a, b in ranges]
    idx = payload["idx"].long()
    layer_of = None
    if "sgn" in payload:
        lay = payload["lay"].long()
        layer_of = torch.repeat_interleave(torch.arange(len(lay), device=idx.device), lay)
    parts = []
    for a, b in ranges:
        m = (idx >= a) & (idx < b)
        part = {"idx": (idx[m] - a).to(torch.int32)}
        if layer_of is None:
            part["val"] = payload["val"][m]
        else:
            part["sgn"] = payload["sgn"][m]
            part["scale"] = payload["scale"]
            part["lay"] = torch.bincount(layer_of[m], minlength=len(payload["lay"])).to(torch.int32)
        parts.append(part)
    return parts


def payload_bytes(payload: dict[str, torch.Tensor]) -> int:
    """Bytes of the payload's tensor data (the message adds a small JSON header)."""
    return sum(t.numel() * t.element_size() for t in payload.values())


def per_layer_counts(payload: dict[str, torch.Tensor], layers: list[Layer]) -> list[int]:
    """How many entries of each layer a sparse payload carries."""
    if "g" in payload:
        return [layer.numel for layer in layers]
    idx = payload["idx"].long()
    return [int(((idx >= layer.start) & (idx < layer.stop)).sum()) for layer in layers]


def train_compressed(learner, layers: list[Layer], params: CompressionParams, steps: int,
                     warmup: int = 0) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """Train ``learner`` for ``warmup + steps`` steps, each applying only what ``params``'
    compression sends (a residual, where the method keeps one, held back as a worker would).

    Returns the entries sent per layer, summed over the last ``steps`` steps, and the last
    payload sent."""
    residual, counts, payload = None, np.zeros(len(layers)), {}
    for step in range(warmup + steps):
        learner.compute_grad()
        payload, residual = compress(learner.get_grad_flat(), residual, layers, params)
        learner.set_grad_flat(decompress(payload, learner.num_params))
        learner.apply_update()
        if step >= warmup:
            counts += per_layer_counts(payload, layers)
    return counts, payload


class Compressor:
    """One node's compression state: its residual (None for ``none`` and ``adacomp``) and
    random stream, around the pure functions."""

    def __init__(self, params: CompressionParams, layers: list[Layer], numel: int, seed: int = 0) -> None:
        self.params = params
        self.layers = layers
        self.numel = numel
        self.residual: torch.Tensor | None = None
        self.gen = torch.Generator().manual_seed(int(seed) % (2**63))
        self.dense_bytes = 0
        self.sent_bytes = 0

    @property
    def active(self) -> bool:
        return self.params.compression != "none"

    def __call__(self, grad: torch.Tensor) -> dict[str, torch.Tensor]:
        payload, self.residual = compress(grad, self.residual, self.layers, self.params, self.gen)
        self.dense_bytes += 4 * self.numel
        self.sent_bytes += payload_bytes(payload)
        return payload

    @property
    def ratio(self) -> float:
        """Dense float32 bytes / payload bytes over every push so far."""
        return self.dense_bytes / self.sent_bytes if self.sent_bytes else 1.0
