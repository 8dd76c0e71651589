"""The device's read models on the Fourier path's DFT block arrays (docs/device.md, "The
Fourier path").

The reference is a :class:`~xbarode.model.fixed_ops.FixedTile` holding the real block DFT
table, built here from numpy (cos/sin of the unitary DFT, rounded to nearest as
:func:`~xbarode.model.fixed_ops.twiddle_matrix` documents), with the same device and seed:
each pass of :func:`~xbarode.model.fixed_ops.dft2_fixed` must be that tile's FORWARD (the
forward transform) or TRANSPOSED (the inverse), word for word and clip for clip. The RTL
units against the model are at the end (Amaranth's simulator, Verilator, Icarus).
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from xbarode.model.device import DEVICE_SEED, DeviceModel
from xbarode.model.fixed import Format, Overflow, Rounder, site_seed
from xbarode.model.fixed_fourier_bank import FixedFourierBank, fourier_bank_fixed
from xbarode.model.fixed_ops import (
    FixedFourierConv,
    FixedTile,
    dft2_fixed,
    dft_noise,
    fourier_conv_fixed,
    fourier_rounders,
    hadamard_fixed,
    spectrum_words,
    twiddle_matrix,
)

D, T, S = Format(18, 10), Format(18, 16), Format(18, 14)
SIZES = [(3, 5), (5, 7), (4, 6)]
ROUNDINGS = ["floor", "nearest", "stochastic"]
#: Each read model alone, and all together.
DEVICES = [DeviceModel(dac_bits=7), DeviceModel(adc_bits=6), DeviceModel(adc_range=0.125),
           DeviceModel(read_noise=0.02),
           DeviceModel(dac_bits=8, adc_bits=8, adc_range=0.5, read_noise=0.01)]
SEED = 0x1234567


def numpy_table(n, fmt):
    """The real block form of the unitary DFT of length n, from numpy's FFT, rounded to
    nearest (half up) and saturated: block (j, k) is [[Re, -Im], [Im, Re]] of F[j, k]."""
    f = np.fft.fft(np.eye(n), norm="ortho")
    table = np.zeros((2 * n, 2 * n))
    table[0::2, 0::2], table[0::2, 1::2] = f.real, -f.imag
    table[1::2, 0::2], table[1::2, 1::2] = f.imag, f.real
    return np.clip(np.floor(table * 2**fmt.frac + 0.5), fmt.min_int, fmt.max_int).astype(
        np.int64)


class ReferenceArrays:
    """The rows and the columns DFT arrays as two FixedTiles with the numpy table: the rows
    tile seeded ``device_seed``, the columns tile ``site_seed(device_seed, 1)``."""

    def __init__(self, height, width, rounding, seed, device, device_seed, twiddle=T):
        self.overflow = Overflow()
        seeds = (device_seed, site_seed(device_seed, 1))
        self.tiles = [FixedTile(numpy_table(n, twiddle), weight_format=twiddle, acc_width=64,
                                rounder=Rounder(rounding, site_seed(seed, k)),
                                overflow=self.overflow, name=name, device=device,
                                device_seed=seeds[k])
                      for k, (n, name) in enumerate(((width, "rows"), (height, "cols")))]

    def pass_(self, blocks, k, inverse, data=D):
        tile = self.tiles[k]
        x = blocks if k == 0 else np.swapaxes(blocks, 0, 1)
        flat = x.reshape(x.shape[0], -1)
        out = (tile.transposed if inverse else tile.forward)(flat, data, data).reshape(x.shape)
        return out if k == 0 else np.swapaxes(out, 0, 1)

    def dft2(self, blocks, inverse=False, data=D):
        if inverse:
            return self.pass_(self.pass_(blocks, 1, True, data), 0, True, data)
        return self.pass_(self.pass_(blocks, 0, False, data), 1, False, data)


def clips(overflow):
    """(DAC clips, ADC clips) of a tally, over its sites."""
    dac = sum(n for label, n in overflow.counts.items() if label.endswith(".dac"))
    adc = sum(n for label, n in overflow.counts.items()
              if not label.endswith(".dac") and not label.endswith(".load"))
    return dac, adc


def random_image(rng, height, width, corner=False):
    if corner:
        return rng.choice([D.min_int, D.max_int], (height, width, 2))
    return D.quantize(rng.uniform(-1, 1, (height, width, 2)), "nearest")


def test_the_numpy_table_is_the_twiddle_matrix():
    for n in (1, 3, 4, 5, 6, 7):
        assert np.array_equal(numpy_table(n, T), twiddle_matrix(n, T))
        assert np.array_equal(numpy_table(n, Format(12, 10)), twiddle_matrix(n, Format(12, 10)))


# --- the model: every pass is a crossbar read --------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(size=st.sampled_from(SIZES), device=st.sampled_from(DEVICES),
       rounding=st.sampled_from(ROUNDINGS), seed=st.integers(1, 2**20),
       device_seed=st.integers(1, 2**32 - 3), corner=st.booleans())
@example(size=(3, 5), device=DEVICES[-1], rounding="stochastic", seed=1, device_seed=DEVICE_SEED,
         corner=True)
def test_each_pass_is_a_fixed_tile_with_the_numpy_table(size, device, rounding, seed,
                                                        device_seed, corner):
    height, width = size
    rng = np.random.default_rng(seed)
    ref = ReferenceArrays(height, width, rounding, seed, device, device_seed)
    rounders = fourier_rounders(rounding, seed)[:2]
    noise = dft_noise(device_seed)
    overflow = Overflow()
    for _ in range(2):          # the generators run on across images and transforms
        x = random_image(rng, height, width, corner)
        want = ref.dft2(x)
        got = dft2_fixed(x, data=D, twiddle=T, rounder=rounders, overflow=overflow,
                         device=device, noise=noise)
        assert np.array_equal(got, want)
        back = dft2_fixed(got, data=D, twiddle=T, rounder=rounders, overflow=overflow,
                          device=device, noise=noise, inverse=True)
        assert np.array_equal(back, ref.dft2(want, inverse=True))
    assert clips(overflow) == clips(ref.overflow)


@settings(max_examples=12, deadline=None)
@given(size=st.sampled_from(SIZES), dac_bits=st.integers(2, 18), adc_bits=st.integers(2, 18),
       range_shift=st.integers(0, 6), noise=st.sampled_from([0.0, 0.001, 0.1, 1.0]),
       rounding=st.sampled_from(ROUNDINGS), seed=st.integers(1, 2**20))
def test_any_read_models_are_the_tiles(size, dac_bits, adc_bits, range_shift, noise, rounding,
                                       seed):
    height, width = size
    device = DeviceModel(dac_bits=dac_bits, adc_bits=adc_bits, adc_range=2.0**-range_shift,
                         read_noise=noise)
    ref = ReferenceArrays(height, width, rounding, seed, device, seed)
    x = random_image(np.random.default_rng(seed), height, width)
    overflow = Overflow()
    got = dft2_fixed(x, data=D, twiddle=T, rounder=fourier_rounders(rounding, seed)[:2],
                     overflow=overflow, device=device, noise=dft_noise(seed))
    assert np.array_equal(got, ref.dft2(x))
    assert clips(overflow) == clips(ref.overflow)


def test_full_scale_saturates_the_adc_and_the_dac_and_counts_every_clip():
    # Every word at full scale: the DAC rounds the largest words past its top (clipped), and
    # a range of 1/16 of the full scale clips most transform outputs.
    height, width = 3, 5
    device = DeviceModel(dac_bits=6, adc_bits=6, adc_range=1 / 16, read_noise=0.05)
    x = np.full((height, width, 2), D.max_int)
    ref = ReferenceArrays(height, width, "nearest", 7, device, 99)
    overflow = Overflow()
    got = dft2_fixed(x, data=D, twiddle=T, rounder=Rounder("nearest", 7), overflow=overflow,
                     device=device, noise=dft_noise(99))
    want = ref.pass_(ref.pass_(x, 0, False), 1, False)
    assert np.array_equal(got, want)
    dac, adc = clips(overflow)
    assert (dac, adc) == clips(ref.overflow)
    # The row pass's 2·H·W inputs are all max_int: each rounds up past the DAC's top.
    assert overflow.counts["dft.rows.dac"] == 2 * height * width
    assert adc > 0 and overflow.counts["dft.rows"] > 0
    r = D.width - 1 - 4                       # the clipping range is [-2^r, 2^r) LSBs
    assert got.max() < 2**r and got.min() >= -(2**r)
    assert overflow.flag


def test_read_noise_moves_the_words_and_the_seed_chooses_the_draws():
    x = random_image(np.random.default_rng(3), 4, 6)
    kwargs = {"data": D, "twiddle": T, "overflow": Overflow()}
    ideal = dft2_fixed(x, rounder=Rounder("nearest"), **kwargs)
    noisy = {seed: dft2_fixed(x, rounder=Rounder("nearest"), device=DeviceModel(read_noise=0.01),
                              noise=dft_noise(seed), **kwargs) for seed in (5, 6)}
    assert not np.array_equal(noisy[5], ideal) and not np.array_equal(noisy[5], noisy[6])
    # 1 % of the full scale (2^17 LSBs): a deviation of about 1300 LSBs, within 3.5 sigma.
    assert 300 < np.abs(noisy[5] - ideal).max() < 2 * 4600
    # The default generators are those of DEVICE_SEED.
    assert np.array_equal(
        dft2_fixed(x, rounder=Rounder("nearest"), device=DeviceModel(read_noise=0.01), **kwargs),
        dft2_fixed(x, rounder=Rounder("nearest"), device=DeviceModel(read_noise=0.01),
                   noise=dft_noise(DEVICE_SEED), **kwargs))


def test_no_device_and_every_model_off_are_the_ideal_arrays():
    x = random_image(np.random.default_rng(4), 5, 7)
    runs = [dft2_fixed(x, data=D, twiddle=T, rounder=Rounder("stochastic", 9),
                       overflow=Overflow(), device=device, noise=dft_noise(3))
            for device in (None, DeviceModel(), DeviceModel(adc_range=1.0))]
    assert np.array_equal(runs[0], runs[1]) and np.array_equal(runs[0], runs[2])
    ref = ReferenceArrays(5, 7, "stochastic", 9, None, 3)
    ref.tiles[1].rounder = ref.tiles[0].rounder          # one rounder for both sites
    assert np.array_equal(runs[0], ref.dft2(x))


# --- the convolution: DFT arrays with the device, the Hadamard product digital ------------------

def reference_conv(kernel, images, rounding, seed, device, device_seed):
    """Rows and columns arrays as FixedTiles, the Hadamard product digital in between."""
    _, height, width = images.shape
    ref = ReferenceArrays(height, width, rounding, seed, device, device_seed)
    had = Rounder(rounding, site_seed(seed, 2))
    spec = spectrum_words(kernel, (height, width), S)
    out = []
    for picture in images:
        x = ref.dft2(np.stack([picture, np.zeros_like(picture)], axis=-1))
        x = hadamard_fixed(np.swapaxes(x, 0, 1), np.swapaxes(spec, 0, 1), x_format=D,
                           spectrum_format=S, out_format=D, rounder=had, overflow=ref.overflow)
        out.append(ref.dft2(np.swapaxes(x, 0, 1), inverse=True)[..., 0])
    return np.array(out), ref.overflow


@settings(max_examples=10, deadline=None)
@given(size=st.sampled_from(SIZES), device=st.sampled_from(DEVICES),
       rounding=st.sampled_from(ROUNDINGS), seed=st.integers(1, 2**20))
def test_fourier_conv_is_the_arrays_and_a_digital_hadamard(size, device, rounding, seed):
    height, width = size
    rng = np.random.default_rng(seed)
    kernel = rng.uniform(-0.5, 0.5, (3, 3))
    images = D.quantize(rng.uniform(0, 1, (2, height, width)), "nearest")
    want, ref_overflow = reference_conv(kernel, images, rounding, seed, device, seed + 1)
    overflow = Overflow()
    got = fourier_conv_fixed(kernel, images, data=D, twiddle=T, spectrum=S,
                             rounder=fourier_rounders(rounding, seed), overflow=overflow,
                             device=device, noise=dft_noise(seed + 1))
    assert np.array_equal(got, want)
    assert clips(overflow) == clips(ref_overflow)
    # The unit in the network: its generators run on across products.
    unit = FixedFourierConv(kernel, (height, width), data=D, twiddle=T, spectrum=S,
                            rounding=rounding, seed=seed, out_seed=1, overflow=Overflow(),
                            name="A", device=device, device_seed=seed + 1)
    flat = images.reshape(2, -1)
    first, second = unit.forward(flat[:1], D, D), unit.forward(flat[1:], D, D)
    assert np.array_equal(np.concatenate([first, second]), got.reshape(2, -1))


@settings(max_examples=6, deadline=None)
@given(size=st.sampled_from(SIZES), device=st.sampled_from(DEVICES),
       rounding=st.sampled_from(ROUNDINGS), seed=st.integers(1, 2**20))
def test_one_channel_bank_is_the_one_channel_path_draw_for_draw(size, device, rounding, seed):
    height, width = size
    rng = np.random.default_rng(seed)
    kernel = rng.uniform(-0.5, 0.5, (3, 3))
    images = D.quantize(rng.uniform(0, 1, (2, height, width)), "nearest")
    conv = fourier_conv_fixed(kernel, images, data=D, twiddle=T, spectrum=S,
                              rounder=fourier_rounders(rounding, seed), overflow=Overflow(),
                              device=device, noise=dft_noise(seed))
    bank = fourier_bank_fixed(kernel[None, None], images[:, None], data=D, twiddle=T,
                              spectrum=S, rounder=fourier_rounders(rounding, seed),
                              overflow=Overflow(), device=device, noise=dft_noise(seed))
    assert np.array_equal(bank[:, 0], conv)


def test_two_channel_bank_draws_channel_after_channel():
    # Forward DFT of input channel 0, then 1 (rows array, then columns array each); the
    # mixing; inverse DFT of output channel 0, then 1: the reference arrays in that order.
    from xbarode.model.fixed_fourier_bank import channel_mix_fixed

    height, width, device = 3, 5, DEVICES[-1]
    rng = np.random.default_rng(8)
    kernels = rng.uniform(-0.4, 0.4, (2, 2, 3, 3))
    images = D.quantize(rng.uniform(0, 1, (1, 2, height, width)), "nearest")
    ref = ReferenceArrays(height, width, "stochastic", 21, device, 77)
    spectra = [ref.dft2(np.stack([c, np.zeros_like(c)], axis=-1)) for c in images[0]]
    words = spectrum_words(kernels, (height, width), S)
    mixed = channel_mix_fixed(np.stack(spectra, axis=-2), words.transpose(2, 3, 0, 1, 4),
                              x_format=D, spectrum_format=S, out_format=D,
                              rounder=Rounder("stochastic", site_seed(21, 2)),
                              overflow=ref.overflow)
    want = np.stack([ref.dft2(mixed[:, :, o], inverse=True)[..., 0] for o in range(2)])
    bank = FixedFourierBank(kernels, (height, width), data=D, twiddle=T, spectrum=S,
                            rounding="stochastic", seed=21, out_seed=1, overflow=Overflow(),
                            name="A", device=device, device_seed=77)
    got = bank.forward(images.reshape(1, -1), D, D)
    assert np.array_equal(got.reshape(2, height, width), want)
    # transposed runs on the same generators: it differs from a fresh unit's.
    y = D.quantize(rng.uniform(-1, 1, (1, 2 * height * width)), "nearest")
    fresh = FixedFourierBank(kernels, (height, width), data=D, twiddle=T, spectrum=S,
                             rounding="stochastic", seed=21, out_seed=1, overflow=Overflow(),
                             name="A", device=device, device_seed=77)
    assert not np.array_equal(bank.transposed(y, D, D), fresh.transposed(y, D, D))


# --- refusals -----------------------------------------------------------------------------------

FIXED_TABLE = (r"the DFT arrays hold a fixed table: the device's write models \(states, "
               r"program_noise, pulses\) do not apply; give read models only \(dac_bits, "
               r"adc_bits, adc_range, read_noise\)$")


@pytest.mark.parametrize("device", [DeviceModel(states=16), DeviceModel(program_noise=0.01),
                                    DeviceModel(pulses=8), DeviceModel(read_noise=0.1,
                                                                       states=256)])
def test_write_models_are_refused_the_table_is_fixed(device):
    x = np.zeros((3, 5, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="^" + FIXED_TABLE):
        dft2_fixed(x, data=D, twiddle=T, rounder=Rounder("nearest"), overflow=Overflow(),
                   device=device)
    with pytest.raises(ValueError, match="^" + FIXED_TABLE):
        fourier_conv_fixed(np.ones((3, 3)), x[None, ..., 0], data=D, twiddle=T, spectrum=S,
                           rounder=Rounder("nearest"), overflow=Overflow(), device=device)
    with pytest.raises(ValueError, match="^" + FIXED_TABLE):
        fourier_bank_fixed(np.ones((1, 1, 3, 3)), x[None, None, ..., 0], data=D, twiddle=T,
                           spectrum=S, rounder=Rounder("nearest"), overflow=Overflow(),
                           device=device)
    common = {"data": D, "twiddle": T, "spectrum": S, "rounding": "nearest", "seed": 1,
              "out_seed": 2, "overflow": Overflow(), "name": "B", "device": device}
    with pytest.raises(ValueError, match="^B: " + FIXED_TABLE):
        FixedFourierConv(np.ones((3, 3)), (3, 5), **common)
    with pytest.raises(ValueError, match="^B: " + FIXED_TABLE):
        FixedFourierBank(np.ones((1, 1, 3, 3)), (3, 5), **common)


def test_a_device_that_is_not_a_model_is_refused():
    with pytest.raises(TypeError, match=r"^A: device must be a DeviceModel or None, not dict$"):
        FixedFourierConv(np.ones((3, 3)), (3, 5), data=D, twiddle=T, spectrum=S,
                         rounding="nearest", seed=1, out_seed=2, overflow=Overflow(), name="A",
                         device={"read_noise": 0.1})
    with pytest.raises(TypeError, match=r"^device must be a DeviceModel or None, not str$"):
        dft2_fixed(np.zeros((3, 5, 2), dtype=np.int64), data=D, twiddle=T,
                   rounder=Rounder("nearest"), overflow=Overflow(), device="adc")


def test_a_range_too_narrow_for_the_data_format_is_refused():
    with pytest.raises(ValueError, match=r"^dft\.rows: an ADC range of .* leaves fewer than 2 "
                                         r"code bits$"):
        dft2_fixed(np.zeros((3, 5, 2), dtype=np.int64), data=Format(4, 2), twiddle=T,
                   rounder=Rounder("nearest"), overflow=Overflow(),
                   device=DeviceModel(adc_range=2.0**-3))


# --- the RTL units against the model ------------------------------------------------------------

def transform_latency(height, width, lanes, forward):
    """The ideal unit's documented latency of a DFT (``forward``) or IDFT (Dft2d's docstring:
    ``4 + Σ (E + L + (V - 1)·max(L, I + E))`` forward, ``4 + Σ V·(E + L + 2)`` inverse, L the
    array's FORWARD or TRANSPOSED latency, I = 2n·C its issue cycles, E = n with an even
    number of lanes, 2n with an odd one)."""
    total = 4
    for vectors, n in ((height, width), (width, height)):
        p = min(lanes or 2 * n, 2 * n)
        chunks = -(-2 * n // p)
        tree = -(-(p - 1).bit_length() // 2) if p > 1 else 0
        words = n * (1 + p % 2)
        if forward:
            product = 2 * n * chunks + tree + 7
            total += words + product + (vectors - 1) * max(product, 2 * n * chunks + words)
        else:
            total += vectors * (words + 2 * n * chunks + 7 + 2)
    return total


def cosim_check(params, vectors=4, seed=0, simulator="amaranth", out=None):
    import tempfile

    from xbarode.units import UNITS, cosim

    with tempfile.TemporaryDirectory() as tmp:
        result = cosim(UNITS[params.unit], params, vectors=vectors, seed=seed,
                       simulator=simulator, out=out or tmp)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["compared"] > 0
    return result


@settings(max_examples=4, deadline=None)
@given(unit=st.sampled_from(["dft", "fourier-conv"]),
       size=st.sampled_from([(3, 5), (2, 3), (4, 3)]), device=st.sampled_from(DEVICES),
       rounding=st.sampled_from(ROUNDINGS), lanes=st.one_of(st.none(), st.integers(1, 10)),
       seed=st.integers(0, 2**16), device_seed=st.integers(1, 2**32 - 3))
@example(unit="dft", size=(3, 5), device=DEVICES[-1], rounding="stochastic", lanes=None, seed=3,
         device_seed=DEVICE_SEED)
def test_rtl_units_with_read_models_match_the_model(unit, size, device, rounding, lanes, seed,
                                                    device_seed):
    # Every fourth vector of a plan is a full-scale corner: the DAC and the ADC clip there.
    from xbarode.sim.fourier_plan import FourierParams

    height, width = size
    params = FourierParams(unit=unit, height=height, width_px=width, lanes=lanes, kernel=1
                           if min(size) < 3 else 3, rounding=rounding, device=device,
                           device_seed=device_seed)
    result = cosim_check(params, vectors=4, seed=seed)
    # The read models add no cycle.
    fwd, inv = (transform_latency(height, width, lanes, forward) for forward in (True, False))
    want = ({"DFT": fwd, "IDFT": inv} if unit == "dft"
            else {"CONV": fwd + inv + height * width + 4})
    assert result["cycles"] == want


def test_rtl_corner_clips_raise_the_flag_as_the_model_counts():
    from xbarode.sim.fourier_plan import (
        FourierParams,
        compare,
        make_plan,
        model_results,
        run_plan_amaranth,
    )

    device = DeviceModel(dac_bits=6, adc_bits=6, adc_range=1 / 16)
    params = FourierParams(unit="dft", height=3, width_px=4, device=device)
    plan = make_plan(params, 4, 2)
    expected = model_results(params, plan)
    assert all(answer["overflow"] == 1 for answer in expected[3])     # the full-scale corner
    got, _ = run_plan_amaranth(params, plan)
    assert compare(expected, got)["mismatches"] == 0
    ideal = FourierParams(unit="dft", height=3, width_px=4)
    assert model_results(ideal, plan) != expected


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_cocotb_fourier_conv_with_read_models_matches_the_model(simulator, tmp_path):
    from xbarode.sim.fourier_plan import FourierParams

    params = FourierParams(unit="fourier-conv", height=3, width_px=5, kernel=3, lanes=1,
                           rounding="stochastic", device=DEVICES[-1], device_seed=0xBEEF)
    result = cosim_check(params, vectors=4, seed=5, simulator=simulator, out=tmp_path)
    assert result["cycles"] == cosim_check(params, vectors=1, seed=5)["cycles"]


@pytest.mark.parametrize("device", [DeviceModel(states=16), DeviceModel(program_noise=0.01),
                                    DeviceModel(pulses=8)])
def test_rtl_units_refuse_write_models(device):
    from xbarode.hdl.fourier import Dft2d, DftArray, FourierConv

    with pytest.raises(ValueError, match="^" + FIXED_TABLE):
        DftArray(3, data_format=D, twiddle_format=T, device=device)
    with pytest.raises(ValueError, match="^" + FIXED_TABLE):
        Dft2d(3, 5, data_format=D, twiddle_format=T, device=device)
    with pytest.raises(ValueError, match="^" + FIXED_TABLE):
        FourierConv(3, 5, data_format=D, twiddle_format=T, spectrum_format=S, device=device)


def test_rtl_units_refuse_bad_read_models_and_seeds():
    from xbarode.hdl.fourier import Dft2d
    from xbarode.sim.fourier_plan import FourierParams

    with pytest.raises(ValueError, match=r"^device: an ADC range of 0\.125 of Q2\.2's full scale "
                                         r"leaves fewer than 2 code bits$"):
        Dft2d(3, 5, data_format=Format(4, 2), twiddle_format=T,
              device=DeviceModel(adc_range=0.125))
    with pytest.raises(ValueError, match=r"^LFSR seed must be a non-zero 32-bit integer, not 0$"):
        Dft2d(3, 5, data_format=D, twiddle_format=T, device=DeviceModel(read_noise=0.1),
              device_seed=0)
    with pytest.raises(TypeError, match=r"^device must be a DeviceModel or None, not dict$"):
        Dft2d(3, 5, data_format=D, twiddle_format=T, device={"read_noise": 0.1})
    with pytest.raises(ValueError, match=r"^the Hadamard unit is digital: the device models apply "
                                         r"to the DFT arrays \(units dft and fourier-conv\)$"):
        FourierParams(unit="hadamard", height=1, width_px=4,
                      device=DeviceModel(read_noise=0.1)).check()


def test_rtl_arrays_take_the_device_and_their_seeds():
    from helpers import elaborated
    from xbarode.hdl.fourier import FourierConv

    device = DEVICES[-1]
    unit = FourierConv(3, 5, data_format=D, twiddle_format=T, spectrum_format=S, device=device,
                       device_seed=1000)
    assert (unit.device, unit.device_seed) == (device, 1000)
    m = elaborated(unit)
    rows, cols = m.submodules.rows, m.submodules.cols
    assert (rows.device, rows.device_seed) == (device, 1000)
    assert (cols.device, cols.device_seed) == (device, 1001)
    off = FourierConv(3, 5, data_format=D, twiddle_format=T, spectrum_format=S,
                      device=DeviceModel())
    assert off.device is None
    assert elaborated(off).submodules.rows.device is None


def test_every_model_off_is_the_same_verilog(tmp_path):
    from xbarode.hdl.fourier import Dft2d
    from xbarode.sim.verilog import write_verilog

    texts = [write_verilog(Dft2d(2, 3, data_format=D, twiddle_format=T, **kwargs), "dft2d",
                           tmp_path / str(k)).read_text()
             for k, kwargs in enumerate([{}, {"device": DeviceModel(), "device_seed": 5}])]
    assert texts[0] == texts[1]
    noisy = write_verilog(Dft2d(2, 3, data_format=D, twiddle_format=T,
                                device=DeviceModel(read_noise=0.1)), "dft2d", tmp_path / "n")
    assert noisy.read_text() != texts[0]


def test_cli_cosim_fourier_conv_takes_the_read_models(tmp_path, capsys):
    import json

    from xbarode.cli import main

    code = main(["cosim", "fourier-conv", "--image", "3x5", "--kernel", "3", "--vectors", "2",
                 "--adc-bits", "8", "--read-noise", "0.01", "--dac-bits", "8",
                 "--device-seed", "0x1234", "--simulator", "amaranth", "--out", str(tmp_path),
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mismatches"] == 0 and result["compared"] == 2 * (15 + 1)   # words and the flag
    code = main(["cosim", "dft", "--image", "3x5", "--program-noise", "0.01", "--simulator",
                 "amaranth", "--out", str(tmp_path)])
    assert code == 2
    assert "the DFT arrays hold a fixed table" in capsys.readouterr().err


# --- the network on the Fourier path ------------------------------------------------------------

def test_network_on_the_fourier_path_reads_its_dft_arrays_through_the_device():
    from xbarode.model import LFSR_SEED, FixedFormats, FixedNetwork, parse_format
    from xbarode.model.fixed import narrow

    formats = FixedFormats(weight=parse_format("16.14"), state=parse_format("16.11"),
                           act=parse_format("16.9"), grad=parse_format("16.11"), acc_width=48)
    data = parse_format("22.12")
    fourier = {"shape": (8, 8), "data": data, "twiddle": T, "spectrum": S}
    rng = np.random.default_rng(12)
    params = {"A": rng.uniform(-0.3, 0.3, (3, 3)), "B": rng.uniform(-0.3, 0.3, (3, 3)),
              "C": rng.normal(0, 0.3, (10, 64)), "d": np.zeros(10)}
    x = rng.uniform(0, 1, (3, 64))
    # Converters of 16 of the data format's 22 bits (its range is ±512): steps of 1/16.
    device = DeviceModel(dac_bits=16, adc_bits=16, read_noise=0.0005)

    def network(device):
        return FixedNetwork(params, formats, rounding="stochastic", h=0.25, steps=2,
                            lfsr_seed=LFSR_SEED, fourier=fourier, image_shape=(8, 8),
                            device=device)

    logits, trajectory, _ = network(device).forward(x)
    ideal_logits, ideal_trajectory, _ = network(None).forward(x)
    assert logits.shape == ideal_logits.shape == (3, 10)
    assert not np.array_equal(trajectory[1], ideal_trajectory[1])
    # Two passes of 1/16 steps and noise of 0.26 (0.05 % of 512) per DFT array read.
    assert np.abs(trajectory[1] - ideal_trajectory[1]).max() < 2**formats.state.frac
    # A's first product: the reference arrays (A's Fourier sites 4-6, its device site 31)
    # and a digital Hadamard product, then A's output narrowing (site 0).
    net = network(device)
    z = formats.state.quantize(x, "nearest")
    got = net.A.forward(z, formats.state, formats.act)
    words = (z << (data.frac - formats.state.frac)).reshape(3, 8, 8)
    seed_a = site_seed(LFSR_SEED, 4)
    spec = spectrum_words(params["A"], (8, 8), S)
    ref = ReferenceArrays(8, 8, "stochastic", seed_a, device, site_seed(LFSR_SEED, 31),
                          twiddle=T)
    had = Rounder("stochastic", site_seed(seed_a, 2))
    conv = []
    for picture in words:
        y = ref.dft2(np.stack([picture, np.zeros_like(picture)], axis=-1), data=data)
        y = hadamard_fixed(np.swapaxes(y, 0, 1), np.swapaxes(spec, 0, 1), x_format=data,
                           spectrum_format=S, out_format=data, rounder=had,
                           overflow=ref.overflow)
        conv.append(ref.dft2(np.swapaxes(y, 0, 1), inverse=True, data=data)[..., 0])
    want = narrow(np.array(conv).reshape(3, 64), data.frac - formats.act.frac, formats.act,
                  Rounder("stochastic", site_seed(LFSR_SEED, 0)), Overflow())
    assert np.array_equal(got, want)
    # B's arrays draw from sites 33 and 34.
    fresh = network(device)
    assert [lfsr.draw(4).tolist() for lfsr in fresh.B.noise] == [
        dft_noise(site_seed(LFSR_SEED, 33))[0].draw(4).tolist(),
        dft_noise(site_seed(LFSR_SEED, 34))[0].draw(4).tolist()]


def test_network_and_config_refuse_write_models_on_the_fourier_path():
    from xbarode.model import Config, FixedFormats, FixedNetwork, parse_format

    formats = FixedFormats(weight=parse_format("16.14"), state=parse_format("16.11"),
                           act=parse_format("16.9"), grad=parse_format("16.11"), acc_width=48)
    fourier = {"shape": (4, 4), "data": parse_format("22.12"), "twiddle": T, "spectrum": S}
    params = {"A": np.zeros((3, 3)), "B": np.zeros((3, 3)), "C": np.zeros((2, 16)),
              "d": np.zeros(2)}
    with pytest.raises(ValueError, match="^the Fourier path: " + FIXED_TABLE):
        FixedNetwork(params, formats, rounding="nearest", h=0.25, steps=1, fourier=fourier,
                     image_shape=(4, 4), device=DeviceModel(program_noise=0.01))
    config = Config(structure="conv", precision="fixed", conv_path="fourier",
                    device=DeviceModel(read_noise=0.01))
    assert config.device == DeviceModel(read_noise=0.01)
    with pytest.raises(ValueError, match=r"^the device's write models \(states, program_noise\) "
                                         r"need structure 'dense'"):
        Config(structure="conv", precision="fixed", conv_path="fourier",
               device=DeviceModel(states=16))
