"""The golden model of xbarode: the mathematics every hardware block must reproduce.

Float64 reference implementations of circular convolution (matrix and shift-sum forms), the
real 2×2-block Fourier path, the Euler and implicit-Euler (Newton) solvers, discrete adjoints,
and the image classifier (one channel, or an augmented multi-channel network). See
docs/architecture.md §1 for the conventions.
"""

from .adjoint import adjoint
from .classifier import (
    augment,
    avg_pool,
    avg_pool_grad,
    head_grads,
    logits,
    softmax_cross_entropy,
)
from .conv import (
    Conv,
    ConvBank,
    Dense,
    circular_conv,
    conv_kernel_grad,
    conv_matrix,
    kernel_pullback,
    tap_columns,
)
from .data import (
    DATASET_SHAPES,
    DATASETS,
    DIGITS_SHAPE,
    MNIST5K_SHAPE,
    Digits,
    Split,
    load_dataset,
    load_digits_split,
    load_mnist5k_split,
)
from .fixed import (
    LFSR_POLY,
    LFSR_SEED,
    ROUNDINGS,
    Format,
    Lfsr,
    Overflow,
    Rounder,
    narrow,
    parse_format,
)
from .fixed_bank import FixedConvBank, FixedPool
from .fixed_fourier_bank import FixedFourierBank
from .fixed_net import FixedFormats, FixedNetwork, formats_for_width
from .fixed_ops import FixedFourierConv, FixedTile
from .fourier import dft_matrix, fourier_conv, from_real, kernel_spectrum, to_real
from .ode import SOLVERS, ConvergenceWarning, Euler, ImplicitEuler, SolveInfo, odeint
from .train import (
    CONV_PATHS,
    Config,
    WeightsError,
    accuracy,
    check_dataset,
    fourier_options,
    init_params,
    load_weights,
    loss_and_grads,
    predict,
    save_weights,
    train,
)

__all__ = [
    "CONV_PATHS",
    "DATASETS",
    "DATASET_SHAPES",
    "DIGITS_SHAPE",
    "LFSR_POLY",
    "LFSR_SEED",
    "MNIST5K_SHAPE",
    "ROUNDINGS",
    "SOLVERS",
    "Config",
    "Conv",
    "ConvBank",
    "ConvergenceWarning",
    "Dense",
    "Digits",
    "Euler",
    "FixedConvBank",
    "FixedFormats",
    "FixedFourierBank",
    "FixedFourierConv",
    "FixedNetwork",
    "FixedPool",
    "FixedTile",
    "Format",
    "ImplicitEuler",
    "Lfsr",
    "Overflow",
    "Rounder",
    "SolveInfo",
    "Split",
    "WeightsError",
    "accuracy",
    "adjoint",
    "augment",
    "avg_pool",
    "avg_pool_grad",
    "check_dataset",
    "circular_conv",
    "conv_kernel_grad",
    "conv_matrix",
    "dft_matrix",
    "formats_for_width",
    "fourier_conv",
    "fourier_options",
    "from_real",
    "head_grads",
    "init_params",
    "kernel_pullback",
    "kernel_spectrum",
    "load_dataset",
    "load_digits_split",
    "load_mnist5k_split",
    "load_weights",
    "logits",
    "loss_and_grads",
    "narrow",
    "odeint",
    "parse_format",
    "predict",
    "save_weights",
    "softmax_cross_entropy",
    "tap_columns",
    "to_real",
    "train",
]
