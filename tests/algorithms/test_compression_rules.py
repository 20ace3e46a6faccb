"""The push-path compressors' rules on small hand-computed cases (simbench/algorithms/compression.py):
how many entries each layer sends (``max(1, round(k_fraction * n))`` for topk / random_k, at the
boundary where ``max(1, .)`` and ``max(2, .)`` differ), Chen et al.'s bin test at equality and
with the conv / fc bin sizes, the quantized wire format (int8 signs, one float32 scale per
layer, int32 counts; scale 0 for a layer that sends nothing), random_k's masks drawn from the
node's own seeded generator, the byte accounting of a Compressor, per-layer counts at layer
boundaries and the steps ``train_compressed`` counts (warmup left out).

Hardy et al.'s rule (Hardy-c/AdaComp, Communication.py::encode_variables) is covered in
test_ps_ako.py; here only its ``compression_rate >= 1`` branch (the dense gradient)."""

import pytest
import torch

from simbench.algorithms.compression import (CompressionParams, Compressor, Layer, check_compression, compress,
                                             decompress, payload_bytes, per_layer_counts, split_payload,
                                             train_compressed)
from simbench.core.schema import ConfigError

# two layers of 12 and 30 entries: k_fraction 0.1 gives k = max(1, round(1.2)) = 1 and round(3.0) = 3
TWO = [Layer("a", 0, 12, "fc"), Layer("b", 12, 42, "fc")]


def _grad_two():
    g = torch.zeros(42)
    g[:12] = 0.01 * torch.arange(12.0)
    g[5] = -7.0
    g[[14, 20, 29, 41]] = torch.tensor([2.0, 1.25, -3.0, 4.0])
    return g


@pytest.mark.parametrize("quantize", [False, True])  # adacomp_quantize is adacomp_chen's knob only
def test_topk_sends_max_1_round_fraction_per_layer_and_keeps_the_rest(quantize):
    g = _grad_two()
    params = CompressionParams(compression="topk", k_fraction=0.1, adacomp_quantize=quantize)
    payload, residual = compress(g, None, TWO, params)
    assert set(payload) == {"idx", "val"}
    assert payload["idx"].tolist() == [5, 14, 29, 41]  # 1 of layer a, 3 of layer b (not 20: |1.25| < 2)
    assert payload["val"].tolist() == [-7.0, 2.0, -3.0, 4.0]
    expected = g.clone()
    expected[[5, 14, 29, 41]] = 0
    assert torch.equal(residual, expected)
    # next push: acc = residual + g, so entry 20 (2 * 1.25) now beats entry 14 (0 + 2)
    payload, residual = compress(g, residual, TWO, params)
    assert payload["idx"].tolist() == [5, 20, 29, 41]
    assert payload["val"].tolist() == [-7.0, 2.5, -3.0, 4.0]
    assert residual[14] == 2.0 and residual[20] == 0.0


def test_random_k_draws_each_layers_mask_from_the_nodes_generator():
    g = _grad_two()
    params = CompressionParams(compression="random_k", k_fraction=0.1)
    ref = torch.Generator().manual_seed(1000003)  # ps.py's seed of node 0

    def expected():  # one permutation per layer, in layer order, from the node's stream
        a = torch.randperm(12, generator=ref)[:1].sort().values
        b = torch.randperm(30, generator=ref)[:3].sort().values + 12
        return torch.cat([a, b]).tolist()

    runs = []
    for _ in range(2):  # the same seed gives the run's same masks twice, whatever the global RNG does
        torch.manual_seed(len(runs))
        comp = Compressor(params, TWO, 42, seed=1000003)
        runs.append([comp(g) for _ in range(2)])
    first, second = expected(), expected()
    assert len(first) == 4 and first != second
    for payloads in runs:
        assert [p["idx"].tolist() for p in payloads] == [first, second]
    p0 = runs[0][0]
    assert torch.equal(p0["val"], g[p0["idx"].long()])
    with pytest.raises(ValueError, match="^random_k needs a generator$"):
        compress(g, None, TWO, params)


def test_k_is_at_least_one_and_rounds_the_fraction_for_topk_and_random_k():
    layers = [Layer("one", 0, 4, "fc"), Layer("small", 4, 16, "fc"), Layer("big", 16, 46, "fc")]
    g = torch.arange(1.0, 47.0)
    # k_fraction 0.1: 4 -> max(1, round(0.4)) = 1, 12 -> round(1.2) = 1, 30 -> round(3.0) = 3
    for method in ("topk", "random_k"):
        params = CompressionParams(compression=method, k_fraction=0.1)
        payload, residual = compress(g, None, layers, params, torch.Generator().manual_seed(0))
        assert per_layer_counts(payload, layers) == [1, 1, 3], method
        assert torch.equal(decompress(payload, 46) + residual, g)
    assert compress(g, None, layers, CompressionParams(compression="topk", k_fraction=0.1))[0]["idx"].tolist() == \
        [3, 15, 43, 44, 45]


def test_adacomp_chen_sends_an_entry_whose_test_value_equals_the_bin_max():
    """|H_k| >= g_max, not >: with residue [.25, 0, 0, 0] and dW = [.5, 1, -.25, -.5],
    G = [.75, 1, -.25, -.5], H = G + dW = [1.25, 2, -.5, -1] and g_max = 1, so entry 3
    (|H| = 1 exactly) is sent with 0 and 1."""
    residue = torch.tensor([0.25, 0.0, 0.0, 0.0])
    dw = torch.tensor([0.5, 1.0, -0.25, -0.5])
    params = CompressionParams(compression="adacomp_chen", adacomp_fc_bin=4)
    payload, residual = compress(dw, residue, [Layer("w", 0, 4, "fc")], params)
    assert payload["idx"].tolist() == [0, 1, 3]
    assert payload["val"].tolist() == [0.75, 1.0, -0.5]
    assert residual.tolist() == [0.0, 0.0, -0.25, 0.0]


def test_adacomp_chen_uses_the_conv_bin_for_conv_layers_and_the_fc_bin_for_fc_layers():
    """The same values in a conv and an fc layer, conv bin 2 and fc bin 4 (residue 0, so an
    entry is sent when 2|dW| >= max |dW| of its bin): bins [1, .25] [.3, .5] send 0, 2, 3 in the
    conv layer; the one bin [1, .25, .3, .5] sends only 1 and .5 in the fc layer."""
    vals = [1.0, 0.25, 0.3, 0.5]
    dw = torch.tensor(vals + vals)
    layers = [Layer("conv.w", 0, 4, "conv"), Layer("fc.w", 4, 8, "fc")]
    params = CompressionParams(compression="adacomp_chen", adacomp_conv_bin=2, adacomp_fc_bin=4)
    payload, _ = compress(dw, None, layers, params)
    assert payload["idx"].tolist() == [0, 2, 3, 4, 7]


def _quantized():
    """Conv layer: g_max 1, sends 1 and -.5, scale .75; fc layer: g_max 2, sends -2, 1, -1,
    scale 4/3; an all-zero layer sends nothing (scale 0)."""
    dw = torch.tensor([1.0, -0.5, 0.25, 0.0, -2.0, 1.0, 0.5, -1.0, 0.0, 0.0])
    layers = [Layer("c", 0, 4, "conv"), Layer("f", 4, 8, "fc"), Layer("z", 8, 10, "fc")]
    params = CompressionParams(compression="adacomp_chen", adacomp_quantize=True, adacomp_conv_bin=4,
                               adacomp_fc_bin=4)
    return dw, compress(dw, None, layers, params)


def test_adacomp_chen_quantized_payload_is_int8_signs_one_scale_per_layer_and_int32_counts():
    dw, (payload, residual) = _quantized()
    assert set(payload) == {"idx", "sgn", "scale", "lay"}
    assert payload["idx"].dtype == torch.int32 and payload["idx"].tolist() == [0, 1, 4, 5, 7]
    assert payload["sgn"].dtype == torch.int8 and payload["sgn"].tolist() == [1, -1, -1, 1, -1]
    assert payload["scale"].dtype == torch.float32
    assert payload["scale"].tolist() == pytest.approx([0.75, 4 / 3, 0.0])
    assert payload["lay"].dtype == torch.int32 and payload["lay"].tolist() == [2, 3, 0]
    assert payload_bytes(payload) == 5 * 4 + 5 * 1 + 3 * 4 + 3 * 4
    s = 4 / 3
    assert decompress(payload, 10).tolist() == pytest.approx([0.75, -0.75, 0, 0, -s, s, 0, -s, 0, 0])
    # the quantization error stays in the residue
    assert residual.tolist() == pytest.approx([0.25, 0.25, 0.25, 0, -2 + s, 1 - s, 0.5, -1 + s, 0, 0])


def test_a_quantized_payload_split_keeps_every_scale_and_counts_each_parts_layers():
    _, (payload, _) = _quantized()
    whole = decompress(payload, 10)
    parts = split_payload(payload, [(0, 5), (5, 10)])
    assert [p["idx"].tolist() for p in parts] == [[0, 1, 4], [0, 2]]
    assert [p["sgn"].tolist() for p in parts] == [[1, -1, -1], [1, -1]]
    assert [p["lay"].tolist() for p in parts] == [[2, 1, 0], [0, 2, 0]]
    assert all(p["lay"].dtype == torch.int32 and p["idx"].dtype == torch.int32 for p in parts)
    assert all(torch.equal(p["scale"], payload["scale"]) for p in parts)
    assert torch.equal(decompress(parts[0], 5), whole[:5]) and torch.equal(decompress(parts[1], 5), whole[5:])


def test_a_split_puts_an_entry_at_a_range_boundary_in_the_range_it_starts():
    payload = {"idx": torch.tensor([0, 3, 4, 9], dtype=torch.int32), "val": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    parts = split_payload(payload, [(0, 4), (4, 10)])
    assert [p["idx"].tolist() for p in parts] == [[0, 3], [0, 5]]
    assert [p["val"].tolist() for p in parts] == [[1.0, 2.0], [3.0, 4.0]]
    assert all(p["idx"].dtype == torch.int32 for p in parts)
    dense = split_payload({"g": torch.arange(10.0)}, [(0, 4), (4, 10)])
    assert [p["g"].tolist() for p in dense] == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]


def test_per_layer_counts_at_layer_boundaries_and_of_a_dense_payload():
    layers = [Layer("a", 0, 4, "fc"), Layer("b", 4, 10, "fc")]
    sparse = {"idx": torch.tensor([0, 3, 4, 9], dtype=torch.int32), "val": torch.ones(4)}
    assert per_layer_counts(sparse, layers) == [2, 2]
    assert per_layer_counts({"g": torch.zeros(10)}, layers) == [4, 6]


def test_adacomp_rate_1_sends_the_dense_gradient():
    """Hardy-c/AdaComp's ``compression >= 1`` branch: the gradient as it is, no indices."""
    g = torch.tensor([3.0, -1.0, 0.0, 2.0])
    payload, residual = compress(g, None, [Layer("w", 0, 4, "fc")], CompressionParams("adacomp", compression_rate=1))
    assert set(payload) == {"g"} and torch.equal(payload["g"], g) and residual is None
    assert payload_bytes(payload) == 16
    assert decompress(payload, 4).tolist() == [3.0, -1.0, 0.0, 2.0]


def test_an_unknown_compression_is_a_one_line_config_error():
    msg = "compression: 'zip' is not allowed; allowed: none, adacomp, adacomp_chen, topk, random_k"
    with pytest.raises(ConfigError) as err:
        compress(torch.zeros(4), None, [Layer("w", 0, 4, "fc")], CompressionParams("zip"))
    assert str(err.value) == msg
    assert check_compression("topk") == "topk"


def test_a_compressor_counts_dense_and_sent_bytes_over_its_pushes():
    g = _grad_two()
    comp = Compressor(CompressionParams(compression="topk", k_fraction=0.1), TWO, 42)
    assert comp.active and (comp.dense_bytes, comp.sent_bytes, comp.ratio) == (0, 0, 1.0)
    sent = [comp(g) for _ in range(2)]
    assert [p["idx"].tolist() for p in sent] == [[5, 14, 29, 41], [5, 20, 29, 41]]  # the residual is kept
    assert (comp.dense_bytes, comp.sent_bytes) == (2 * 42 * 4, 2 * 4 * 8)
    assert comp.ratio == 42 * 4 / (4 * 8)
    assert not Compressor(CompressionParams(), TWO, 42).active


@pytest.mark.parametrize("kwargs, seed", [({}, 0), ({"seed": -1}, 2**63 - 1), ({"seed": 2**63 + 5}, 5)])
def test_a_compressors_seed_is_taken_modulo_2_63(kwargs, seed):
    """Any int seeds the node's stream: seed % 2**63 (the default seed is 0)."""
    comp = Compressor(CompressionParams(compression="random_k", k_fraction=0.5), TWO, 42, **kwargs)
    ref = torch.Generator().manual_seed(seed)
    a = torch.randperm(12, generator=ref)[:6].sort().values
    b = torch.randperm(30, generator=ref)[:15].sort().values + 12
    assert comp(_grad_two())["idx"].tolist() == torch.cat([a, b]).tolist()


class _ScriptedLearner:
    """The four calls train_compressed makes: step i's gradient is ``grads[i]``; the update
    applied is recorded."""

    def __init__(self, grads):
        self.grads, self.applied, self.num_params = grads, [], grads[0].numel()
        self._grad = None

    def compute_grad(self):
        self._grad = self.grads[len(self.applied)].clone()

    def get_grad_flat(self):
        return self._grad

    def set_grad_flat(self, flat):
        self._grad = flat

    def apply_update(self):
        self.applied.append(self._grad)


def test_train_compressed_counts_the_sent_entries_of_the_steps_after_warmup():
    """topk with k_fraction 0.34 sends 1 of 4 and 2 of 6 entries per step; step i's gradient
    has its largest entries at i, 4 + i and 5 + i (shifted by i), so the last payload names its step."""
    layers = [Layer("a", 0, 4, "fc"), Layer("b", 4, 10, "fc")]

    def grads(n):
        out = []
        for i in range(n):
            g = torch.full((10,), 0.001)
            g[[i % 4, 4 + i % 5, 5 + i % 5]] = torch.tensor([10.0, 20.0, 30.0])
            out.append(g)
        return out

    params = CompressionParams(compression="topk", k_fraction=0.34)
    learner = _ScriptedLearner(grads(5))
    counts, payload = train_compressed(learner, layers, params, 3, warmup=2)
    assert counts.tolist() == [3, 6] and len(learner.applied) == 5
    assert payload["idx"].tolist() == [0, 8, 9]  # step 4: i % 4 = 0, 4 + 4 and 5 + 4
    assert learner.applied[0].tolist() == [10, 0, 0, 0, 20, 30, 0, 0, 0, 0]  # only what was sent
    learner = _ScriptedLearner(grads(3))
    counts, payload = train_compressed(learner, layers, params, 3)  # no warmup by default
    assert counts.tolist() == [3, 6] and len(learner.applied) == 3
    assert payload["idx"].tolist() == [2, 6, 7]


def _compress_on(device):
    """topk, random_k, quantized adacomp_chen and a split on ``device``; returns everything on the CPU."""
    out = []
    g = _grad_two().to(device)
    for method in ("topk", "random_k"):
        params = CompressionParams(compression=method, k_fraction=0.1)
        payload, residual = compress(g, None, TWO, params, torch.Generator().manual_seed(0))
        assert payload["idx"].device.type == device and residual.device.type == device
        out += [payload["idx"].cpu(), payload["val"].cpu(), residual.cpu(), decompress(payload, 42).cpu()]
    dw = torch.tensor([1.0, -0.5, 0.25, 0.0, -2.0, 1.0, 0.5, -1.0, 0.0, 0.0], device=device)
    layers = [Layer("c", 0, 4, "conv"), Layer("f", 4, 8, "fc"), Layer("z", 8, 10, "fc")]
    params = CompressionParams(compression="adacomp_chen", adacomp_quantize=True, adacomp_conv_bin=4)
    payload, residual = compress(dw, None, layers, params)
    assert payload["scale"].device.type == device
    parts = split_payload(payload, [(0, 5), (5, 10)])
    out += [payload["scale"].cpu(), residual.cpu()] + [decompress(p, 5).cpu() for p in parts]
    return out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compression_stays_on_the_gpu_and_agrees_with_the_cpu():
    """Masks, scales and layer ids are made where the gradient lives (on a CPU-only machine
    ``device=None`` and the gradient's device are the same, so only this test tells them apart)."""
    for cpu, cuda in zip(_compress_on("cpu"), _compress_on("cuda")):
        assert torch.allclose(cpu, cuda)
