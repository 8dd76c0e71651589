"""The device's read models on kernel banks (``FixedConvBank(device=…)``, ``FixedNetwork`` with
banks and a device): a bank is the tile that holds its block matrix, so with the read models
(DAC, ADC, clipping range, read noise) its products must be a ``FixedTile``'s holding that
matrix with the same device and seed: outputs, clip counts, the noise draws' order and the
generators' states afterwards. The network is checked against a forward pass and an adjoint
written out here step by step with ``FixedTile``s on block matrices built from
``scipy.ndimage.convolve``, and tap sums pulled back from the dense gradient sums by hand. The
write models and pulsed updates are refused on banks, as on a one-channel convolution."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from helpers import last_json, run
from xbarode.model import Config, load_weights
from xbarode.model.conv import conv_matrix, tap_columns
from xbarode.model.device import DEVICE_SEED, DeviceModel
from xbarode.model.fixed import Format, Overflow, Rounder
from xbarode.model.fixed_bank import FixedConvBank
from xbarode.model.fixed_net import FixedNetwork, formats_for_width
from xbarode.model.fixed_ops import FixedTile

SETTINGS = settings(max_examples=30, deadline=None)
MODES = ("floor", "nearest", "stochastic")
SEED = 0xACE1ACE1
SHAPES = ((3, 5), (5, 7), (5, 5), (7, 3))
#: Each read model alone, and all of them together (formats below are wider than the
#: converters, so each acts).
READ_MODELS = {
    "dac": DeviceModel(dac_bits=5),
    "adc": DeviceModel(adc_bits=5),
    "range": DeviceModel(adc_range=0.25),
    "noise": DeviceModel(read_noise=0.05),
    "all": DeviceModel(dac_bits=6, adc_bits=6, adc_range=0.5, read_noise=0.02),
}
W_FMT, X_FMT, OUT_FMT = Format(10, 8), Format(10, 6), Format(10, 5)


def site_seed(seed: int, k: int) -> int:
    """The documented seed of site ``k``: ``seed + k`` counted through 1 … 2³² − 1."""
    return (seed - 1 + k) % (2**32 - 1) + 1


def block_matrix(kernels, shape) -> np.ndarray:
    """The bank's block matrix from scipy, column by column (basis images), as int64."""
    c_out, c_in = kernels.shape[:2]
    m = shape[0] * shape[1]
    columns = []
    for j in range(c_in * m):
        basis = np.zeros((c_in, *shape))
        basis.reshape(-1)[j] = 1.0
        columns.append(np.concatenate([
            sum(ndimage.convolve(basis[i], kernels[o, i].astype(np.float64), mode="wrap")
                for i in range(c_in)).ravel() for o in range(c_out)]))
    matrix = np.stack(columns, axis=1)
    assert np.array_equal(matrix, np.rint(matrix))
    return np.rint(matrix).astype(np.int64)


def pair(kernels, shape, device, mode, *, device_seed=DEVICE_SEED, seed=SEED):
    """A bank and the tile holding its block matrix, alike in everything else."""
    common = {"weight_format": W_FMT, "acc_width": 48, "name": "A", "device": device,
              "device_seed": device_seed}
    bank = FixedConvBank(kernels, shape, rounder=Rounder(mode, seed), **common)
    tile = FixedTile(bank.dense(), rounder=Rounder(mode, seed), **common)
    return bank, tile


def products(unit, x, y):
    """Forward (shift 1) and transposed products, twice: the second pair shows that the
    generators ran on alike."""
    out = []
    for _ in range(2):
        out.append(unit.forward(x, X_FMT, OUT_FMT, shift=1))
        out.append(unit.transposed(y, X_FMT, OUT_FMT))
    return out


def assert_same(bank, tile, x, y):
    for got, want in zip(products(bank, x, y), products(tile, x, y), strict=True):
        np.testing.assert_array_equal(got, want)
    assert bank.overflow.counts == tile.overflow.counts
    assert bank.overflow.words == tile.overflow.words
    if tile.device is not None:
        assert bank._read_noise.state == tile._read_noise.state


# --- one bank against the tile holding its block matrix -------------------------------------


@SETTINGS
@given(shape=st.sampled_from(SHAPES), c_out=st.integers(1, 3), c_in=st.integers(1, 3),
       k=st.sampled_from([1, 3]), model=st.sampled_from(sorted(READ_MODELS)),
       mode=st.sampled_from(MODES), batch=st.integers(2, 4), seed=st.integers(0, 2**16))
@example(shape=(3, 5), c_out=3, c_in=1, k=3, model="all", mode="stochastic", batch=2, seed=0)
@example(shape=(5, 7), c_out=2, c_in=3, k=3, model="noise", mode="nearest", batch=3, seed=1)
@example(shape=(5, 7), c_out=1, c_in=2, k=1, model="dac", mode="floor", batch=2, seed=2)
@example(shape=(7, 3), c_out=3, c_in=2, k=3, model="adc", mode="stochastic", batch=4, seed=3)
@example(shape=(5, 5), c_out=2, c_in=1, k=3, model="range", mode="nearest", batch=2, seed=4)
def test_bank_reads_are_the_block_matrix_tile_reads(shape, c_out, c_in, k, model, mode, batch,
                                                    seed):
    rng = np.random.default_rng(seed)
    m = shape[0] * shape[1]
    kernels = rng.integers(W_FMT.min_int, W_FMT.max_int, (c_out, c_in, k, k), endpoint=True)
    x = rng.integers(X_FMT.min_int, X_FMT.max_int, (batch, c_in * m), endpoint=True)
    y = rng.integers(X_FMT.min_int, X_FMT.max_int, (batch, c_out * m), endpoint=True)
    device_seed = int(rng.integers(1, 2**32))
    bank, tile = pair(kernels, shape, READ_MODELS[model], mode, device_seed=device_seed)
    np.testing.assert_array_equal(bank.dense(), block_matrix(kernels, shape))
    assert_same(bank, tile, x, y)


def test_the_read_models_act_on_a_bank():
    """Each model changes some product of the ideal bank (so the comparisons above bite), and
    two device seeds draw different noise."""
    rng = np.random.default_rng(11)
    shape, kernels = (5, 7), rng.integers(-400, 400, (2, 3, 3, 3))
    x = rng.integers(X_FMT.min_int, X_FMT.max_int, (3, 3 * 35), endpoint=True)
    y = rng.integers(X_FMT.min_int, X_FMT.max_int, (3, 2 * 35), endpoint=True)
    ideal = products(pair(kernels, shape, None, "nearest")[0], x, y)
    for name, device in READ_MODELS.items():
        acted = products(pair(kernels, shape, device, "nearest")[0], x, y)
        assert not np.array_equal(acted[0], ideal[0]), name
        assert not np.array_equal(acted[1], ideal[1]), name
    noise = READ_MODELS["noise"]
    one = products(pair(kernels, shape, noise, "nearest", device_seed=1)[0], x, y)
    other = products(pair(kernels, shape, noise, "nearest", device_seed=2)[0], x, y)
    assert not np.array_equal(one[0], other[0])
    # The noise draws on: the second forward product differs from the first.
    assert not np.array_equal(one[0], one[2])


@pytest.mark.parametrize("mode", MODES)
def test_a_bank_with_every_model_off_is_the_ideal_bank(mode):
    rng = np.random.default_rng(5)
    shape, kernels = (3, 5), rng.integers(W_FMT.min_int, W_FMT.max_int, (3, 2, 3, 3))
    x = rng.integers(X_FMT.min_int, X_FMT.max_int, (2, 2 * 15), endpoint=True)
    y = rng.integers(X_FMT.min_int, X_FMT.max_int, (2, 3 * 15), endpoint=True)
    ideal = pair(kernels, shape, None, mode)[0]
    want = products(ideal, x, y)
    # Every model off, and the converters at the formats' own resolution (full range).
    for device in (DeviceModel(), DeviceModel(dac_bits=X_FMT.width, adc_bits=OUT_FMT.width)):
        bank = pair(kernels, shape, device, mode)[0]
        for got, expected in zip(products(bank, x, y), want, strict=True):
            np.testing.assert_array_equal(got, expected)
        assert bank.overflow.counts == ideal.overflow.counts


def test_saturation_corner_counts_every_adc_and_dac_clip():
    """Full-scale weights and inputs: every exact sum lies far beyond the ADC's range
    ``adc_range = 1/2`` of Q5.5 (``R = 2^(10-1-1)`` LSBs), so every output is the top or
    bottom code; a 4-bit DAC rounds the most positive input words up past its top code."""
    shape, c_out, c_in, k = (5, 7), 2, 3, 3
    device = DeviceModel(dac_bits=4, adc_bits=6, adc_range=0.5)
    kernels = np.full((c_out, c_in, k, k), W_FMT.min_int)
    x = np.full((2, c_in * 35), X_FMT.min_int)
    y = np.full((2, c_out * 35), X_FMT.max_int)
    bank, tile = pair(kernels, shape, device, "nearest")
    # ADC: 6 code bits over r + 1 = 9 bits of range: a step of 2^3 LSBs.
    top, bottom = (2**5 - 1) * 2**3, -(2**5) * 2**3
    forward = bank.forward(x, X_FMT, OUT_FMT)
    assert (forward == top).all()
    transposed = bank.transposed(y, X_FMT, OUT_FMT)
    assert (transposed == bottom).all()
    assert bank.overflow.counts == Counter({"A.forward": x.size // c_in * c_out,
                                            "A.transposed": y.size // c_out * c_in,
                                            "A.transposed.dac": y.size})
    np.testing.assert_array_equal(forward, tile.forward(x, X_FMT, OUT_FMT))
    np.testing.assert_array_equal(transposed, tile.transposed(y, X_FMT, OUT_FMT))
    assert bank.overflow.counts == tile.overflow.counts
    assert bank.overflow.words == tile.overflow.words


# --- refusals ---------------------------------------------------------------------------------

BANK_WRITES = (r"^A: the device's write models \(states, program_noise\) and pulsed updates "
               r"need a dense tile; a kernel bank's tied weights would drift apart$")
NETWORK_WRITES = (r"^the device's write models \(states, program_noise\) need a dense network; "
                  r"a convolution's tied weights would drift apart$")


@pytest.mark.parametrize("device", [DeviceModel(states=64), DeviceModel(program_noise=0.01),
                                    DeviceModel(pulses=8), DeviceModel(read_noise=0.1,
                                                                       states=256)])
def test_write_models_and_pulses_are_refused_on_a_bank(device):
    with pytest.raises(ValueError, match=BANK_WRITES):
        FixedConvBank(np.zeros((2, 2, 3, 3), dtype=np.int64), (5, 7), weight_format=W_FMT,
                      acc_width=48, rounder=Rounder("nearest"), name="A", device=device)
    params = {"A": np.zeros((2, 2, 3, 3)), "B": np.zeros((2, 2, 3, 3)),
              "C": np.zeros((3, 70)), "d": np.zeros(3)}
    with pytest.raises(ValueError, match=NETWORK_WRITES):
        FixedNetwork(params, formats_for_width(12), rounding="nearest", h=0.25, steps=1,
                     image_shape=(5, 7), device=device)
    # The one-channel convolution (tied m×m tiles) says the same.
    dense = {"A": np.zeros((35, 35)), "B": np.zeros((35, 35)), "C": np.zeros((3, 35)),
             "d": np.zeros(3)}
    with pytest.raises(ValueError, match=NETWORK_WRITES):
        FixedNetwork(dense, formats_for_width(12), rounding="nearest", h=0.25, steps=1,
                     conv_taps=np.zeros((9, 35), dtype=np.int64), device=device)
    with pytest.raises(ValueError, match=r"^the device's write models \(states, "
                                         r"program_noise\) need structure 'dense'"):
        Config(precision="fixed", structure="conv", channels=2, device=device)


def test_other_refusals():
    with pytest.raises(TypeError, match=r"^A: device must be a DeviceModel or None, not dict$"):
        FixedConvBank(np.zeros((1, 1, 1, 1), dtype=np.int64), (3, 5), weight_format=W_FMT,
                      acc_width=48, rounder=Rounder("nearest"), name="A",
                      device={"adc_bits": 4})
    fourier = {"shape": (5, 7), "data": Format(22, 12), "twiddle": Format(18, 16),
               "spectrum": Format(18, 14)}
    params = {"A": np.zeros((2, 2, 3, 3)), "B": np.zeros((2, 2, 3, 3)),
              "C": np.zeros((3, 70)), "d": np.zeros(3)}
    # On the Fourier path the DFT arrays take the read models (tests/test_fourier_device.py),
    # not the write models: their table is fixed.
    message = r"^the Fourier path: the DFT arrays hold a fixed table: the device's write models"
    with pytest.raises(ValueError, match=message):
        FixedNetwork(params, formats_for_width(16), rounding="nearest", h=0.25, steps=1,
                     image_shape=(5, 7), fourier=fourier, device=DeviceModel(pulses=8))
    net = FixedNetwork(params, formats_for_width(16), rounding="nearest", h=0.25, steps=1,
                       image_shape=(5, 7), fourier=fourier, device=DeviceModel(adc_bits=8))
    assert net.A.device == net.B.device == DeviceModel(adc_bits=8)
    Config(precision="fixed", structure="conv", channels=2, conv_path="fourier",
           device=DeviceModel(adc_bits=8))
    # The read models on banks are a valid training configuration.
    Config(precision="fixed", structure="conv", channels=2,
           device=DeviceModel(dac_bits=8, adc_bits=8, read_noise=0.01)).check_trainable()


# --- the network ------------------------------------------------------------------------------

FORMATS = formats_for_width(12)                  # weight Q2.10, state Q5.7, act Q7.5, grad Q5.7
NET_DEVICE = DeviceModel(dac_bits=8, adc_bits=8, read_noise=0.01)
H_SHIFT, STEPS = 2, 3


def net_problem(shape=(5, 7), c=2, k=3, classes=3, batch=3):
    rng = np.random.default_rng(23)
    w = FORMATS.weight
    scale = 2**w.frac / np.sqrt(c * k * k)
    ka, kb = (np.rint(rng.normal(0, 0.9 * scale, (c, c, k, k))).astype(np.int64)
              for _ in range(2))
    C = np.rint(rng.normal(0, 0.5 * 2**w.frac, (classes, c * shape[0] * shape[1])))
    d = np.rint(rng.normal(0, 0.2 * 2**w.frac, classes))
    x = rng.integers(0, 2**FORMATS.state.frac + 1, (batch, shape[0] * shape[1]))
    return ka, kb, C.astype(np.int64), d.astype(np.int64), x


class HandNetwork:
    """The network written out step by step: dense tiles on the scipy block matrices, each
    tile's rounder and device generators seeded as documented (tile k: rounding site k,
    device site 16 + 5k of the network's seed)."""

    def __init__(self, ka, kb, C, d, shape, mode):
        self.overflow = Overflow()
        self.tiles = {}
        for k, (name, weights) in enumerate((("A", block_matrix(ka, shape)),
                                             ("B", block_matrix(kb, shape)), ("C", C))):
            self.tiles[name] = FixedTile(weights, weight_format=FORMATS.weight, acc_width=48,
                                         rounder=Rounder(mode, site_seed(SEED, k)),
                                         overflow=self.overflow, name=name, device=NET_DEVICE,
                                         device_seed=site_seed(SEED, 16 + 5 * k))
        self.d, self.c, self.shape = d, ka.shape[0], shape

    def saturate(self, values, fmt, label):
        out = np.clip(values, fmt.min_int, fmt.max_int)
        self.overflow.add(label, int(np.count_nonzero(out != values)), out.size)
        return out

    def forward(self, x):
        f, A, B, C = FORMATS, self.tiles["A"], self.tiles["B"], self.tiles["C"]
        z = np.zeros((len(x), self.c * x.shape[1]), dtype=np.int64)
        z[:, :x.shape[1]] = x
        trajectory = [z]
        for _ in range(STEPS):
            u = A.forward(z, f.state, f.act)
            dz = B.forward(np.maximum(u, 0), f.act, f.state, shift=H_SHIFT)
            z = self.saturate(z + dz, f.state, "euler.state")
            trajectory.append(z)
        return C.forward(z, f.state, f.act, bias=self.d), np.stack(trajectory)

    def backward(self, trajectory, grad_logits):
        f, A, B, C = FORMATS, self.tiles["A"], self.tiles["B"], self.tiles["C"]
        lam = C.transposed(grad_logits, f.grad, f.grad)
        pairs = {"A": [], "B": []}
        for n in reversed(range(STEPS)):
            z = trajectory[n]
            u = A.forward(z, f.state, f.act)
            g = np.where(u > 0, B.transposed(lam, f.grad, f.grad), 0)
            pairs["B"].append((lam, np.maximum(u, 0)))
            pairs["A"].append((g, z))
            lam = self.saturate(lam + A.transposed(g, f.grad, f.grad, shift=H_SHIFT), f.grad,
                                "adjoint.lambda")
        dense = {name: sum(out.T.astype(object) @ inp.astype(object) for out, inp in items)
                 for name, items in pairs.items()}
        return dense, lam


def tap_sums(dense, c, k, shape):
    """Pull a dense gradient sum onto the taps: a bank of distinct labels marks where each
    tap sits in the block matrix."""
    labels = np.arange(1, c * c * k * k + 1).reshape(c, c, k, k)
    where = block_matrix(labels, shape)
    sums = np.zeros(labels.shape, dtype=np.int64)
    for index in np.ndindex(labels.shape):
        sums[index] = int(dense[where == labels[index]].sum())
    return sums


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_network_with_banks_reads_through_the_device(mode):
    shape, c, k = (5, 7), 2, 3
    ka, kb, C, d, x = net_problem(shape, c, k)
    w = FORMATS.weight
    params = {"A": ka / 2**w.frac, "B": kb / 2**w.frac, "C": C / 2**w.frac, "d": d / 2**w.frac}
    net = FixedNetwork(params, FORMATS, rounding=mode, h=2.0**-H_SHIFT, steps=STEPS,
                       lfsr_seed=SEED, image_shape=shape, device=NET_DEVICE)
    assert isinstance(net.A, FixedConvBank) and net.A.device == NET_DEVICE
    hand = HandNetwork(ka, kb, C, d, shape, mode)
    logits, trajectory, _ = net.forward(x / 2**FORMATS.state.frac)
    want_logits, want_trajectory = hand.forward(x)
    np.testing.assert_array_equal(trajectory, want_trajectory)
    np.testing.assert_array_equal(logits, want_logits)
    # The device acts: the ideal network's logits differ.
    ideal = FixedNetwork(params, FORMATS, rounding=mode, h=2.0**-H_SHIFT, steps=STEPS,
                         lfsr_seed=SEED, image_shape=shape)
    assert not np.array_equal(ideal.forward(x / 2**FORMATS.state.frac)[0], logits)
    labels = ("A.forward", "B.forward", "A.forward.dac", "B.forward.dac", "C.forward",
              "euler.state")
    assert {name: net.overflow.words[name] for name in labels} == \
        {name: hand.overflow.words[name] for name in labels}
    assert {name: net.overflow.counts[name] for name in labels} == \
        {name: hand.overflow.counts[name] for name in labels}
    # The adjoint reads through the device too; the gradient sums stay exact tap sums.
    grad_logits = np.random.default_rng(3).integers(-2**FORMATS.grad.frac,
                                                    2**FORMATS.grad.frac, logits.shape)
    grads = net.backward(trajectory, grad_logits)
    dense, lam = hand.backward(trajectory, grad_logits)
    np.testing.assert_array_equal(grads["z0"], lam)
    for name in "AB":
        assert grads[name].shape == (c, c, k, k) and grads[name].dtype == np.int64
        np.testing.assert_array_equal(grads[name], tap_sums(dense[name], c, k, shape))
        assert np.abs(grads[name]).max() > 0
    np.testing.assert_array_equal(grads["C"], grad_logits.T @ trajectory[-1])
    net.sgd_step(grads, lr=0.5, batch_size=4)
    assert not np.array_equal(net.A.kernels, ka) and not np.array_equal(net.B.kernels, kb)
    assert all(np.isfinite(v).all() for v in net.params().values())


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
def test_one_channel_bank_with_a_device_is_the_one_channel_network(method):
    """A 1×1 bank with the read models trains exactly as the one-channel network with
    ``conv_taps`` (m×m tiles, which took the read models before banks did): forward, adjoint
    and SGD, two steps, every noise draw."""
    shape, k = (5, 7), 3
    ka, kb, C, d, x = net_problem(shape, 1, k, batch=4)
    w = FORMATS.weight
    common = {"rounding": "stochastic", "h": 2.0**-H_SHIFT, "steps": 2, "method": method,
              "lfsr_seed": SEED, "image_shape": shape, "device": NET_DEVICE,
              "newton": {"neumann_terms": 6, "max_iter": 6}}
    head = {"C": C / 2**w.frac, "d": d / 2**w.frac}
    bank = FixedNetwork({"A": ka / 2**w.frac, "B": kb / 2**w.frac, **head}, FORMATS, **common)
    taps = tap_columns(k, shape)
    dense = FixedNetwork({"A": conv_matrix(ka[0, 0], shape) / 2**w.frac,
                          "B": conv_matrix(kb[0, 0], shape) / 2**w.frac, **head}, FORMATS,
                         conv_taps=taps, **common)
    assert isinstance(bank.A, FixedConvBank) and isinstance(dense.A, FixedTile)
    labels = np.array([0, 1, 2, 1])
    for _ in range(2):
        outputs = [net.forward(x / 2**FORMATS.state.frac) for net in (bank, dense)]
        np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
        np.testing.assert_array_equal(outputs[0][1], outputs[1][1])
        grad_logits = bank.loss_gradient(outputs[0][0], labels)
        grads = [net.backward(out[1], grad_logits)
                 for net, out in zip((bank, dense), outputs, strict=True)]
        for name in "AB":
            pulled = grads[1][name][np.arange(shape[0] * shape[1])[None, :], taps].sum(axis=1)
            np.testing.assert_array_equal(grads[0][name].ravel(), pulled)
        for key in ("C", "d", "z0"):
            np.testing.assert_array_equal(grads[0][key], grads[1][key])
        for net, g in zip((bank, dense), grads, strict=True):
            net.sgd_step(g, lr=0.25, batch_size=4)
        for name in "AB":
            np.testing.assert_array_equal(getattr(bank, name).dense(),
                                          getattr(dense, name).weights)
        assert bank.overflow.counts == dense.overflow.counts
        assert bank.overflow.counts["A.forward.dac"] == 0 < bank.overflow.words["A.forward.dac"]


def test_cli_trains_and_evaluates_a_bank_network_with_read_models(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    code, out, err = run(capsys, "train", "--structure", "conv", "--channels", 2, "--width", 16,
                         "--adc-bits", 8, "--read-noise", 0.01, "--epochs", 1, "--steps", 2,
                         "--out", weights, "--json")
    assert code == 0, err
    config = load_weights(weights)[0]
    assert config.channels == 2 and config.device == DeviceModel(adc_bits=8, read_noise=0.01)
    assert last_json(out)["config"]["device"]["adc_bits"] == 8
    code, out, err = run(capsys, "evaluate", weights, "--width", 16, "--dac-bits", 8,
                         "--read-noise", 0.005, "--json")
    assert code == 0, err
    result = last_json(out)
    assert 0 <= result["test_accuracy"] <= 1
    assert result["config"]["device"]["dac_bits"] == 8 and result["config"]["channels"] == 2
    code, _, err = run(capsys, "evaluate", weights, "--width", 16, "--states", 64)
    assert code == 2 and "the device's write models (states, program_noise) need structure " \
                         "'dense'" in err
