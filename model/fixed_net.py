"""The image neural ODE in fixed point: inference, discrete adjoint and SGD on integers.

The integer twin of :mod:`xbarode.model.train`, built from the hardware twins of
:mod:`xbarode.model.fixed_ops` and :mod:`xbarode.model.fixed_bank`: three tiles (``A``, ``B``
and the head ``C`` with bias ``d``; with ``c`` channels A and B hold the (c·m)×(c·m) block
matrices of their kernel banks), the Euler or Newton step, the average pool before the head
(if any), the adjoint with transposed tile products, exact gradient sums in the wide
accumulator, and one SGD step per mini-batch applied with the tiles' update.

Signal classes and their formats (:class:`FixedFormats`): ``weight`` (A, B, C, d), ``state``
(z and the Newton residual), ``act`` (``u = A z``, ``relu(u)``, logits), ``grad`` (λ, ``Bᵀλ``,
``g``, the loss gradient). The step ``h``, the learning rate and ``1/batch`` are powers of two,
folded into narrowing shifts.

Where randomness enters: each rounding site ``k`` has its own LFSR seeded
``site_seed(lfsr_seed, k)`` (:func:`~xbarode.model.fixed.site_seed`: ``lfsr_seed + k``,
counted cyclically through the non-zero 32-bit values, so the sites' seeds are distinct for
every ``lfsr_seed``): tiles A, B, C are sites 0, 1, 2; the loss gradient (the one float step,
the softmax, which the host computes) is quantised with site 3. On the Fourier path
(``fourier``) A's and B's output narrowings (and, when the banks train, their SGD steps) keep
sites 0 and 1, and the two Fourier units use sites 4–6 and 7–9 (for the adjoint's transposed
products too). The pool unit is site 10. With a device model, tile ``k``'s device
generators (read noise, programming noise, the states' rounding, row and column pulses) are
sites ``16 + 5k`` to ``20 + 5k`` (:data:`~xbarode.model.device.DEVICE_SITE`); on the Fourier
path the read noise of A's and B's DFT arrays draws from sites ``31 + 2k`` (rows array) and
``32 + 2k`` (columns array) (:data:`~xbarode.model.device.FOURIER_DEVICE_SITE`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .device import DEVICE_PURPOSES, DEVICE_SITE, FOURIER_DEVICE_SITE, DeviceModel
from .fixed import (
    LFSR_SEED,
    Format,
    Overflow,
    Rounder,
    exact_matmul,
    narrow,
    parse_format,
    site_seed,
)
from .fixed_bank import POOL_SITE, FixedConvBank, FixedPool
from .fixed_fourier_bank import FixedFourierBank
from .fixed_ops import (
    FixedFourierConv,
    FixedTile,
    accumulator_bits,
    dft_device,
    euler_step,
    fixed_argmax,
    newton_step,
    power_of_two_shift,
)

__all__ = [
    "INT_BITS",
    "FixedFormats",
    "FixedNetwork",
    "formats_for_width",
    "site_seed",
]

#: Integer bits (sign included) per signal class, from the float model's ranges on the digits
#: (max |weight| 0.65, |z| 9.5, |A z| 18, logits 30 (up to 40 in fixed point), |λ| 6.1 with
#: explicit and 8.5 with implicit Euler, |Bᵀλ| 7.7, after training).
INT_BITS = {"weight": 2, "state": 5, "act": 7, "grad": 5}


@dataclass(frozen=True)
class FixedFormats:
    """Formats of each signal class and the accumulator width.

    Attributes
    ----------
    weight, state, act, grad : Format
    acc_width : int
        Width of every wide accumulator (tile products and gradient sums).
    """

    weight: Format
    state: Format
    act: Format
    grad: Format
    acc_width: int = 48

    def __post_init__(self):
        if isinstance(self.acc_width, bool) or not isinstance(self.acc_width, int):
            raise TypeError("acc_width must be an integer")
        if not 2 <= self.acc_width <= 63:
            raise ValueError(f"acc_width must be between 2 and 63, not {self.acc_width}")

    def check(self, m: int, classes: int, gradient_terms: int = 0,
              features: int | None = None) -> None:
        """Raise if the accumulator cannot hold a sum the network needs.

        ``m`` products per tile output of A and B (the state size, ``c·H·W`` with ``c``
        channels: the tiles hold the block matrices) and per transposed output, ``features``
        (default ``m``; fewer after a pool) per output of C with its bias, and
        ``gradient_terms`` products per weight-gradient entry (batch × steps) when training.
        """
        sums = [
            ("A·z", self.weight, self.state, m, 0),
            ("B·relu(u)", self.weight, self.act, m, 0),
            ("C·z + d", self.weight, self.state, m if features is None else features, 1),
            ("Cᵀ·λ", self.weight, self.grad, classes, 0),
            ("Bᵀ·λ and Aᵀ·g", self.weight, self.grad, m, 0),
        ]
        if gradient_terms:
            sums += [("the gradient sum λ·relu(u)ᵀ", self.grad, self.act, gradient_terms, 0),
                     ("the gradient sum g·zᵀ", self.grad, self.state, gradient_terms, 0)]
        for what, a, b, terms, extra in sums:
            need = accumulator_bits(a, b, terms, extra)
            if need > self.acc_width:
                raise ValueError(
                    f"an accumulator of {self.acc_width} bits is too narrow for {what}: "
                    f"{terms} products of {a.width}x{b.width}-bit words need {need} bits"
                )

    def as_strings(self) -> dict[str, str]:
        """``{"weight": "16.14", ...}``: the ``WIDTH.FRAC`` spelling of each class."""
        return {k: f"{getattr(self, k).width}.{getattr(self, k).frac}" for k in INT_BITS}


def formats_for_width(width: int, frac: int | None = None, acc_width: int = 48,
                      **overrides: str) -> FixedFormats:
    """Formats for a word width: ``frac`` for every class, or ``width - INT_BITS[class]``.

    ``overrides`` maps a class name to a ``"WIDTH.FRAC"`` string.
    """
    unknown = set(overrides) - set(INT_BITS)
    if unknown:
        raise ValueError(f"unknown signal class {sorted(unknown)}; choose from {list(INT_BITS)}")
    formats = {}
    for name, int_bits in INT_BITS.items():
        if name in overrides:
            formats[name] = parse_format(overrides[name])
        else:
            formats[name] = Format(width, frac if frac is not None else max(width - int_bits, 0))
    return FixedFormats(**formats, acc_width=acc_width)


class FixedNetwork:
    """The neural ODE on integers: weights in tiles, forward, adjoint and SGD.

    Parameters
    ----------
    params : dict of ndarray
        Float parameters ``A``, ``B`` (m×m matrices, or (c, c, k, k) kernel banks), ``C``
        (classes × features), ``d``; quantised to the weight format with round-to-nearest
        (the host's DAC) and saturated (counted). A bank makes its tile a
        :class:`~xbarode.model.fixed_bank.FixedConvBank`: the tile holds the bank's
        (c·m)×(c·m) block matrix, its SGD step keeps the kernels tied (with ``fourier``, a
        :class:`~xbarode.model.fixed_fourier_bank.FixedFourierBank` instead), and the state is
        ``c`` images, ``z_0`` the image in channel 0 and zeros in the others.
    formats : FixedFormats
    rounding : {"floor", "nearest", "stochastic"}
        Rounding of every narrowing in the network.
    h : float
        Step size, a power of two.
    steps : int
    method : {"euler", "implicit_euler"}
    newton : dict, optional
        ``neumann_terms``, ``max_iter``, ``tol`` (integer LSBs of the state) for implicit Euler.
    lfsr_seed : int
        Seed of tile A's LFSR; B, C and the loss gradient use sites 1, 2, 3 after it
        (:func:`~xbarode.model.fixed.site_seed`).
    conv_taps : ndarray of int, shape (k², m), optional
        ``A`` and ``B`` are circular-convolution matrices whose taps sit where
        :func:`xbarode.model.conv.tap_columns` says: :meth:`sgd_step` then keeps the kernels'
        weights tied (one step per tap, :meth:`FixedTile.apply_kernel_gradient`).
    fourier : dict, optional
        The Fourier path of the core: ``A`` and ``B`` are k×k kernels whose products run
        through :class:`~xbarode.model.fixed_ops.FixedFourierConv`, or (c, c, k, k) banks
        through :class:`~xbarode.model.fixed_fourier_bank.FixedFourierBank` (DFT per input
        channel, a c×c complex product per frequency, inverse DFT per output channel); keys
        ``shape`` (H, W), ``data``, ``twiddle``, ``spectrum`` (Formats), and for banks an
        optional ``acc_width`` (the mixing accumulator's, checked). Sites: A's and B's output
        narrowings (and their SGD steps) take the seeds of tiles A and B; the Fourier units of
        A and B the seeds ``4, 5, 6`` and ``7, 8, 9`` of ``lfsr_seed``
        (:func:`~xbarode.model.fixed.site_seed`). Banks train: the adjoint's transposed
        products run through the same units (:meth:`FixedFourierBank.transposed`), the tap
        sums are the direct path's, and the SGD step moves the kernels on the weight grid
        (:meth:`FixedFourierBank.apply_kernel_gradient`); give one channel as a (1, 1, k, k)
        bank to train it. A k×k kernel's unit is for inference: :meth:`backward` and
        :meth:`sgd_step` refuse it.
    image_shape : tuple of int, optional
        ``(H, W)``; needed with kernel banks and with a pool.
    pool : int
        The head reads the ``pool``×``pool`` average of every channel of ``z_N``, computed by
        :class:`~xbarode.model.fixed_bank.FixedPool` (one narrowing per feature, to the state
        format; its own rounding site ``POOL_SITE`` = 10); 1 is no pool.
    device : DeviceModel, optional
        The crossbar's non-idealities (docs/device.md), on tiles A, B and C alike; tile ``k``
        seeds its device generators with ``site_seed(lfsr_seed, DEVICE_SITE + 5k)``, a
        kernel bank's as a dense tile's. With ``conv_taps`` or kernel banks, the read models
        only (no ``states``, ``program_noise`` or ``pulses``: the tied kernel weights would
        drift apart). On the Fourier path (``fourier``) the read models only too: A's and B's
        DFT arrays read through them (:func:`~xbarode.model.fixed_ops.dft2_fixed`), unit
        ``k`` seeded ``site_seed(lfsr_seed, FOURIER_DEVICE_SITE + 2k)``, and C is a dense
        tile as above. None, or every model off: the ideal network, bit for bit.

    Notes
    -----
    One stepping loop (:meth:`forward`) and one adjoint (:meth:`backward`) serve every
    network: dense or convolution tiles, one channel or a bank. With ``c = 1`` and no pool the
    network is the one-channel network, bit for bit.
    """

    def __init__(self, params, formats: FixedFormats, *, rounding: str, h: float, steps: int,
                 method: str = "euler", newton: dict | None = None, lfsr_seed: int = LFSR_SEED,
                 conv_taps: np.ndarray | None = None, fourier: dict | None = None,
                 image_shape: tuple[int, int] | None = None, pool: int = 1,
                 device: DeviceModel | None = None):
        device = None if device is None or device.off else device
        if fourier is not None:
            device = dft_device(device, "the Fourier path")
        if device is not None and device.writes and (conv_taps is not None
                                                      or np.ndim(params["A"]) == 4):
            raise ValueError("the device's write models (states, program_noise) need a dense "
                             "network; a convolution's tied weights would drift apart")
        self.device = device
        self.formats = formats
        self.fourier = fourier
        self.conv_taps = None if conv_taps is None else np.asarray(conv_taps, dtype=np.int64)
        self.steps = steps
        self.h_shift = power_of_two_shift(h, "h")
        self.method = method
        self.newton = {"neumann_terms": 8, "max_iter": 10, "tol": 1, **(newton or {})}
        self.overflow = Overflow()
        w = formats.weight
        tiles = {} if fourier is None else self._fourier_units(params, fourier, rounding,
                                                                lfsr_seed, device)
        for k, name in enumerate("ABC"):
            if name in tiles:
                continue
            ints = w.quantize(params[name], "nearest", self.overflow, f"{name}.load")
            tile = FixedConvBank if ints.ndim == 4 else FixedTile
            extra = {"shape": image_shape} if ints.ndim == 4 else {}
            if device is not None:
                # A bank takes the read models only (its write models are refused above).
                extra |= {"device": device, "device_seed": site_seed(
                    lfsr_seed, DEVICE_SITE + len(DEVICE_PURPOSES) * k)}
                # The core's tile B holds Bᵀ: B's write draws follow Bᵀ's order, as LOAD_B's.
                if tile is FixedTile and name == "B":
                    extra["holds_transpose"] = True
            tiles[name] = tile(ints, **extra, weight_format=w, acc_width=formats.acc_width,
                               rounder=Rounder(rounding, site_seed(lfsr_seed, k)),
                               overflow=self.overflow, name=name)
        self.A, self.B, self.C = tiles["A"], tiles["B"], tiles["C"]
        self.d = w.quantize(params["d"], "nearest", self.overflow, "d.load")
        self.loss_rounder = Rounder(rounding, site_seed(lfsr_seed, 3))
        state_size = self.A.shape[0]
        self.channels = self.A.channels[1] if isinstance(self.A, FixedConvBank
                                                         | FixedFourierBank) else 1
        self.pool = None
        if pool != 1:
            if image_shape is None:
                raise ValueError("a pool needs the image shape")
            self.pool = FixedPool(pool, state_size // (image_shape[0] * image_shape[1]),
                                  image_shape, rounder=Rounder(rounding,
                                                               site_seed(lfsr_seed, POOL_SITE)),
                                  overflow=self.overflow)
        features = state_size if self.pool is None else self.pool.features
        if self.C.shape[1] != features:
            raise ValueError(f"C has {self.C.shape[1]} columns; the head reads {features} "
                             f"features")
        formats.check(state_size, self.C.shape[0], features=features)

    def _fourier_units(self, params, fourier: dict, rounding: str, lfsr_seed: int,
                       device: DeviceModel | None) -> dict:
        """A's and B's Fourier units: a :class:`FixedFourierConv` for a k×k kernel, a
        :class:`~xbarode.model.fixed_fourier_bank.FixedFourierBank` for a (c, c, k, k) bank;
        with ``device`` (read models) unit ``k`` seeded ``FOURIER_DEVICE_SITE + 2k``."""
        units = {}
        for k, name in enumerate("AB"):
            bank = np.ndim(params[name]) == 4
            unit = FixedFourierBank if bank else FixedFourierConv
            extra = {"acc_width": fourier.get("acc_width")} if bank else {}
            units[name] = unit(
                params[name], fourier["shape"], data=fourier["data"],
                twiddle=fourier["twiddle"], spectrum=fourier["spectrum"], rounding=rounding,
                seed=site_seed(lfsr_seed, 4 + 3 * k), out_seed=site_seed(lfsr_seed, k),
                overflow=self.overflow, name=name, device=device,
                device_seed=site_seed(lfsr_seed, FOURIER_DEVICE_SITE + 2 * k), **extra)
        return units

    def params(self) -> dict[str, np.ndarray]:
        """The current weights as floats (exactly the integers' values; on the Fourier path
        the kernels as given, whose spectra the host quantises)."""
        w = self.formats.weight
        if isinstance(self.A, FixedFourierBank):
            a, b = self.A.kernels.copy(), self.B.kernels.copy()
        elif self.fourier is not None:
            a, b = self.A.kernel.copy(), self.B.kernel.copy()
        elif isinstance(self.A, FixedConvBank):
            a, b = w.to_float(self.A.kernels), w.to_float(self.B.kernels)
        else:
            a, b = w.to_float(self.A.weights), w.to_float(self.B.weights)
        return {"A": a, "B": b, "C": w.to_float(self.C.weights), "d": w.to_float(self.d)}

    def _trainable(self) -> None:
        if isinstance(self.A, FixedFourierConv):
            raise ValueError("the one-channel Fourier unit (a k×k kernel) has no adjoint; "
                             "give A and B as (1, 1, k, k) banks to train on the Fourier path")

    def forward(self, x: np.ndarray):
        """Integer forward pass of float images ``x`` (batch, m), pixels in [0, 1].

        The images are quantised to the state format (nearest) and, with ``c`` channels,
        placed in channel 0 of a state whose other channels are 0. The head reads ``z_N``, or
        its pooled features.

        Returns
        -------
        logits : ndarray of int, (batch, classes), in the ``act`` format
        trajectory : ndarray of int, (steps + 1, batch, c·m), in the ``state`` format
        info : dict
            ``iterations`` and ``converged`` per step and row (implicit Euler).
        """
        f = self.formats
        z = f.state.quantize(x, "nearest", self.overflow, "input")
        if self.channels > 1:
            image = z
            z = np.zeros((*image.shape[:-1], self.channels * image.shape[-1]), dtype=np.int64)
            z[..., :image.shape[-1]] = image
        trajectory = [z]
        iterations, converged = [], []
        for _ in range(self.steps):
            if self.method == "euler":
                z = euler_step(self.A, self.B, z, state=f.state, act=f.act,
                               h_shift=self.h_shift, overflow=self.overflow)[0]
            else:
                z, its, conv = newton_step(self.A, self.B, z, state=f.state, act=f.act,
                                           h_shift=self.h_shift, overflow=self.overflow,
                                           **self.newton)
                iterations.append(its)
                converged.append(conv)
            trajectory.append(z)
        logits = self.C.forward(self._features(z), f.state, f.act, bias=self.d)
        info = {"iterations": np.array(iterations), "converged": np.array(converged)}
        return logits, np.stack(trajectory), info

    def _features(self, z: np.ndarray) -> np.ndarray:
        """What the head reads: ``z``, or its pooled features."""
        return z if self.pool is None else self.pool.forward(z, self.formats.state)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class of each image: argmax of the integer logits."""
        return fixed_argmax(self.forward(x)[0])

    def loss_gradient(self, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``softmax(logits) - onehot(labels)`` per row, quantised to the ``grad`` format.

        The softmax is the host's float step; its result enters the hardware through the DAC.
        """
        scores = self.formats.act.to_float(logits)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        probs[np.arange(len(labels)), labels] -= 1.0
        return self.formats.grad.quantize(probs, self.loss_rounder, self.overflow, "loss")

    def backward(self, trajectory: np.ndarray, grad_logits: np.ndarray) -> dict:
        """Discrete adjoint on integers; exact gradient sums (not yet scaled by h or lr).

        With a pool, the head's features are computed again from ``z_N`` (the pool's LFSR
        draws on, as A's does when the adjoint recomputes ``u``), and ``∂L/∂z_N`` is the pool's
        transpose of C's transposed product.

        Returns
        -------
        dict
            ``A``, ``B``, ``C``, ``d``: int64 sums of products, with ``grad.frac + state.frac``
            (A, C), ``grad.frac + act.frac`` (B) and ``grad.frac`` (d) fractional bits; A and B
            still lack the factor h, and for a kernel bank they are the sums per kernel tap
            (:meth:`FixedConvBank.gradient_sums`, shaped like the bank); ``z0``: ``∂L/∂z_0``
            in the ``grad`` format.
        """
        self._trainable()
        f = self.formats
        steps, batch, m = trajectory.shape[0] - 1, trajectory.shape[1], trajectory.shape[2]
        f.check(m, self.C.shape[0], gradient_terms=steps * batch, features=self.C.shape[1])
        features = self._features(trajectory[-1])
        grads = {"C": exact_matmul(grad_logits.T, features, "C.grad"),
                 "d": grad_logits.sum(axis=0)}
        lam = self.C.transposed(grad_logits, f.grad, f.grad)
        if self.pool is not None:
            lam = self.pool.transposed(lam, f.grad)
        b_out, b_in, a_out, a_in = [], [], [], []
        for n in reversed(range(steps)):
            z = trajectory[n + 1] if self.method == "implicit_euler" else trajectory[n]
            u = self.A.forward(z, f.state, f.act)
            r, mask = np.where(u > 0, u, 0), u > 0
            if self.method == "implicit_euler":
                lam = self._transposed_neumann(lam, mask)
            g = np.where(mask, self.B.transposed(lam, f.grad, f.grad), 0)
            b_out.append(lam)
            b_in.append(r)
            a_out.append(g)
            a_in.append(z)
            if self.method == "euler":
                step = self.A.transposed(g, f.grad, f.grad, shift=self.h_shift)
                lam = self._saturate(lam + step, f.grad, "adjoint.lambda")
        grads["B"] = _gradient_sums(self.B, np.concatenate(b_out), np.concatenate(b_in))
        grads["A"] = _gradient_sums(self.A, np.concatenate(a_out), np.concatenate(a_in))
        if self.device is not None and self.device.pulses is not None:
            # Pulsed updates drive the tiles with each sample's vectors, not with the sums.
            grads["samples"] = {
                "A": (np.concatenate(a_out), np.concatenate(a_in)),
                "B": (np.concatenate(b_out), np.concatenate(b_in)),
                "C": (grad_logits, features)}
        grads["z0"] = lam
        return grads

    def _transposed_neumann(self, lam, mask):
        """``μ`` with ``(I - h·J)ᵀ μ = λ``: ``μ <- sat(λ + narrow(h·Aᵀ(D ⊙ narrow(Bᵀ μ))))``."""
        f = self.formats
        mu = lam
        for _ in range(self.newton["neumann_terms"]):
            g = np.where(mask, self.B.transposed(mu, f.grad, f.grad), 0)
            mu = self._saturate(lam + self.A.transposed(g, f.grad, f.grad, shift=self.h_shift),
                                f.grad, "adjoint.mu")
        return mu

    def _saturate(self, values, fmt, label):
        result = np.clip(values, fmt.min_int, fmt.max_int)
        self.overflow.add(label, np.count_nonzero(result != values), result.size)
        return result

    def _pulsed_step(self, grads: dict, shift: int) -> None:
        """The SGD step with the device's pulsed updates: tiles A, B (holding ``Bᵀ``) and C in
        that order, each driven by every sample's vectors in the order :meth:`backward` lists
        them; the bias ``d`` (digital) takes its usual step."""
        f = self.formats
        for tile, in_format, extra in ((self.A, f.state, self.h_shift),
                                       (self.B, f.act, self.h_shift), (self.C, f.state, 0)):
            outputs, inputs = grads["samples"][tile.name]
            tile.pulsed_update(outputs, f.grad, inputs, in_format, shift=shift + extra,
                               transposed=tile is self.B)
        step = narrow(-grads["d"], f.grad.frac + shift - f.weight.frac, f.weight,
                      self.C.rounder, self.overflow, "d.update")
        self.d = self._saturate(self.d + step, f.weight, "d.weights")

    def sgd_step(self, grads: dict, *, lr: float, batch_size: int) -> None:
        """``W <- W - lr/batch_size · gradient`` for every tile and the bias, one rounding each.

        ``lr`` and ``batch_size`` are powers of two; with ``h`` they make up each update's
        shift. With ``conv_taps``, ``A`` and ``B`` take one step per kernel tap instead of one
        per matrix entry, so they stay convolution matrices; a kernel bank, on either path,
        takes one step per kernel weight (on the Fourier path the spectra then follow the
        kernels). With a device model's ``pulses``
        (``grads`` then carries ``samples``, from :meth:`backward`), the tiles take pulsed
        updates (:meth:`FixedTile.pulsed_update`).
        """
        self._trainable()
        f = self.formats
        shift = power_of_two_shift(lr, "lr") + power_of_two_shift(1 / batch_size, "1/batch_size")
        if "samples" in grads:
            self._pulsed_step(grads, shift)
            return
        # The core's tile B holds Bᵀ: its step draws in the row-major (or tap) order of Bᵀ.
        for tile, frac in ((self.A, f.state.frac), (self.B, f.act.frac)):
            transposed = tile is self.B
            if isinstance(tile, FixedConvBank):
                tile.apply_kernel_gradient(grads[tile.name], f.grad.frac + frac,
                                           shift=shift + self.h_shift, transposed=transposed)
            elif isinstance(tile, FixedFourierBank):
                tile.apply_kernel_gradient(grads[tile.name], f.grad.frac + frac,
                                           shift=shift + self.h_shift, weight_format=f.weight,
                                           transposed=transposed)
            elif self.conv_taps is None:
                tile.apply_gradient(grads[tile.name], f.grad.frac + frac,
                                    shift=shift + self.h_shift, transposed=transposed)
            else:
                tile.apply_kernel_gradient(grads[tile.name], f.grad.frac + frac,
                                           shift=shift + self.h_shift, taps=self.conv_taps,
                                           transposed=transposed)
        self.C.apply_gradient(grads["C"], f.grad.frac + f.state.frac, shift=shift)
        step = narrow(-grads["d"], f.grad.frac + shift - f.weight.frac, f.weight,
                      self.C.rounder, self.overflow, "d.update")
        self.d = self._saturate(self.d + step, f.weight, "d.weights")


def _gradient_sums(tile, outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """The exact gradient sums of a tile: ``Σ g xᵀ`` (m×m), or per kernel tap for a bank (on
    either path)."""
    if isinstance(tile, FixedConvBank | FixedFourierBank):
        return tile.gradient_sums(outputs, inputs)
    return exact_matmul(outputs.T, inputs, f"{tile.name}.grad")
