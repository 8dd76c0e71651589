"""Tests of the digits classifier: loss, gradients, data split, training, configuration and
weights files (``xbarode.model.classifier``, ``.data`` and ``.train``)."""

from __future__ import annotations

import collections
import gc
import importlib
import io
import json
import os
import struct
import warnings
import zipfile

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from helpers import LIVE_FRACTION, positive_fraction
from xbarode.model import (
    Config,
    WeightsError,
    head_grads,
    init_params,
    load_digits_split,
    load_weights,
    logits,
    loss_and_grads,
    predict,
    save_weights,
    softmax_cross_entropy,
    train,
)

# The package re-exports the function train under the submodule's name.
train_module = importlib.import_module("xbarode.model.train")

EPS = 1e-6
RTOL = 1e-6


def central_difference(f, array, index, eps=EPS):
    """``∂f/∂array[index]`` by central differences, perturbing ``array`` in place."""
    saved = array[index]
    array[index] = saved + eps
    plus = f()
    array[index] = saved - eps
    minus = f()
    array[index] = saved
    return (plus - minus) / (2 * eps)


def reference_loss(scores, labels):
    """Mean cross-entropy from scipy's log-softmax."""
    return float(-log_softmax(scores, axis=1)[np.arange(len(labels)), labels].mean())


def relative_error(approx, exact):
    """Largest deviation relative to the largest entry of ``exact``."""
    scale = np.abs(exact).max()
    assert scale > 1e-8, "degenerate gradient: the check would prove nothing"
    return float(np.abs(np.asarray(approx) - exact).max() / scale)


# --- softmax cross-entropy and the head -----------------------------------------------------


def test_softmax_cross_entropy_matches_scipy():
    rng = np.random.default_rng(1)
    scores = rng.normal(0.0, 3.0, (7, 10))
    labels = rng.integers(0, 10, 7)
    loss, grad = softmax_cross_entropy(scores, labels)
    assert loss == pytest.approx(reference_loss(scores, labels), rel=1e-13)
    onehot = np.eye(10)[labels]
    np.testing.assert_allclose(grad, (softmax(scores, axis=1) - onehot) / 7, rtol=1e-12,
                               atol=1e-15)


def test_softmax_cross_entropy_gradient_finite_differences():
    rng = np.random.default_rng(2)
    scores = rng.normal(0.0, 2.0, (5, 10))
    labels = rng.integers(0, 10, 5)
    _, grad = softmax_cross_entropy(scores, labels)
    numeric = np.zeros_like(scores)
    for index in np.ndindex(scores.shape):
        numeric[index] = central_difference(
            lambda: softmax_cross_entropy(scores, labels)[0], scores, index)
    assert relative_error(numeric, grad) <= RTOL


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    rng = np.random.default_rng(3)
    scores = rng.normal(0.0, 1.0, (4, 10))
    labels = np.array([0, 3, 9, 5])
    loss, grad = softmax_cross_entropy(scores + 1e4, labels)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(reference_loss(scores, labels), rel=1e-9)


@pytest.mark.parametrize("labels", [[0, 10], [-1, 2]])
def test_softmax_cross_entropy_rejects_out_of_range_labels(labels):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        softmax_cross_entropy(np.zeros((2, 10)), np.array(labels))


def test_softmax_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="scores must be"):
        softmax_cross_entropy(np.zeros((3, 10)), np.array([1, 2]))


def test_head_grads_finite_differences():
    rng = np.random.default_rng(4)
    C, d = rng.normal(0.0, 0.5, (10, 6)), rng.normal(0.0, 0.5, 10)
    z = rng.normal(0.0, 1.0, (3, 6))
    labels = np.array([2, 7, 7])

    def loss():
        return reference_loss(logits(C, d, z), labels)

    _, grad_scores = softmax_cross_entropy(logits(C, d, z), labels)
    grads = dict(zip("Cdz", head_grads(grad_scores, z, C), strict=True))
    for name, array in {"C": C, "d": d, "z": z}.items():
        assert grads[name].shape == array.shape
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            numeric[index] = central_difference(loss, array, index)
        assert relative_error(numeric, grads[name]) <= RTOL, name


# --- gradients of the whole network ---------------------------------------------------------


def random_params(config, seed):
    """Parameters with a non-zero head (the initial head is zero and would hide A and B)."""
    rng = np.random.default_rng(seed)
    params = init_params(config)
    params["A"] = params["A"] * 2.0
    params["C"] = rng.normal(0.0, 0.3, params["C"].shape)
    params["d"] = rng.normal(0.0, 0.1, params["d"].shape)
    return params


@pytest.mark.parametrize("method", ["euler", "implicit_euler"])
@pytest.mark.parametrize("structure", ["dense", "conv"])
def test_loss_and_grads_match_finite_differences(digits, structure, method):
    # tol far below EPS*RTOL: Newton's leftover residual must not pollute the differences.
    config = Config(structure=structure, method=method, tol=1e-14, seed=5)
    params = random_params(config, seed=6)
    x, y = digits.x_train[:4], digits.y_train[:4]

    def loss():
        return reference_loss(predict(config, params, x), y)

    # The relu must be live at every step, or A and B get no gradient to check.
    from xbarode.model import odeint
    from xbarode.model.train import operators

    a_op, b_op = operators(config, params)
    states = odeint(a_op, b_op, x, config.h, config.steps, config.method,
                    **config.solver_options)
    states = states[1:] if method == "implicit_euler" else states[:-1]
    assert positive_fraction(states @ a_op.dense().T) >= LIVE_FRACTION
    value, grads = loss_and_grads(config, params, x, y)
    assert value == pytest.approx(loss(), rel=1e-12)
    assert set(grads) == {"A", "B", "C", "d"}
    rng = np.random.default_rng(7)
    for name, array in params.items():
        grad = grads[name]
        assert grad.shape == array.shape
        # Every entry of the small arrays; a random sample of the dense 64×64 and 10×64 ones,
        # plus one directional derivative that involves every entry.
        indices = list(np.ndindex(array.shape))
        if len(indices) > 100:
            indices = [indices[i] for i in rng.choice(len(indices), 24, replace=False)]
        numeric = np.array([central_difference(loss, array, index) for index in indices])
        exact = np.array([grad[index] for index in indices])
        assert relative_error(numeric, exact) <= RTOL, (name, numeric, exact)

        direction = rng.normal(size=array.shape)
        direction /= np.linalg.norm(direction)
        saved = array.copy()
        array += EPS * direction
        plus = loss()
        array[...] = saved - EPS * direction
        minus = loss()
        array[...] = saved
        slope = (plus - minus) / (2 * EPS)
        assert abs(slope - np.sum(grad * direction)) <= RTOL * np.linalg.norm(grad), name


# --- data -----------------------------------------------------------------------------------


def test_digits_split_sizes_ranges_and_labels(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.y_train.shape == (1437,) and digits.y_test.shape == (360,)
    for x in (digits.x_train, digits.x_test):
        assert x.dtype == np.float64 and x.min() >= 0.0 and x.max() <= 1.0
    for y in (digits.y_train, digits.y_test):
        assert np.issubdtype(y.dtype, np.integer)
        assert set(np.unique(y).tolist()) == set(range(10))


def test_digits_split_is_the_same_on_every_call(digits):
    again = load_digits_split()
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(again, field), getattr(digits, field)), field


def test_digits_split_is_a_partition_of_sklearn_digits(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    everything = [(row.tobytes(), int(t)) for row, t in zip(raw.data, raw.target, strict=True)]
    # Premise of the row-based check: no image occurs twice in the data set.
    assert len({image for image, _ in everything}) == len(everything)

    def keys(x, y):
        return [((row * 16.0).tobytes(), int(t)) for row, t in zip(x, y, strict=True)]

    train_keys = keys(digits.x_train, digits.y_train)
    test_keys = keys(digits.x_test, digits.y_test)
    assert not set(train_keys) & set(test_keys)
    assert collections.Counter(train_keys) + collections.Counter(test_keys) == (
        collections.Counter(everything))


# --- training -------------------------------------------------------------------------------


def test_train_is_deterministic_for_a_seed(digits):
    config = Config(epochs=2, seed=3)
    first, summary1 = train(config, digits)
    second, summary2 = train(config, digits)
    other, _ = train(Config(epochs=2, seed=4), digits)
    assert set(first) == {"A", "B", "C", "d"}
    for name in first:
        assert np.array_equal(first[name], second[name]), name
    assert summary1["test_accuracy"] == summary2["test_accuracy"]
    assert summary1["losses"] == summary2["losses"]
    assert not all(np.array_equal(first[name], other[name]) for name in first)


def test_train_reports_progress_per_epoch(digits):
    seen = []

    def progress(iterable):
        for item in iterable:
            seen.append(item)
            yield item

    _, summary = train(Config(structure="conv", epochs=3), digits, progress=progress)
    assert len(seen) == 3
    assert len(summary["losses"]) == 3 and summary["final_loss"] == summary["losses"][-1]


def test_default_config_reaches_97_percent(digits):
    params, summary = train(Config(), digits)
    assert summary["test_accuracy"] >= 0.97
    predicted = predict(Config(), params, digits.x_test).argmax(axis=1)
    assert summary["test_accuracy"] == np.mean(predicted == digits.y_test)
    assert summary["losses"][-1] < summary["losses"][0]
    assert summary["seconds"] > 0


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"structure": "sparse"}, "structure must be 'conv' or 'dense'"),
        ({"structure": "conv", "kernel_size": 4}, "kernel size must be odd, not 4"),
        ({"structure": "conv", "kernel_size": 9}, "kernel of size 9 does not fit"),
        ({"steps": 0}, "steps must be >= 1, not 0"),
        ({"T": 0.0}, "T must be a finite number > 0"),
        ({"T": -1.0}, "T must be a finite number > 0"),
        ({"T": float("inf")}, "T must be a finite number > 0"),
        ({"T": float("nan")}, "T must be a finite number > 0"),
        ({"method": "rk4"}, "unknown method 'rk4'"),
        ({"linear_solver": "lu"}, "linear_solver must be 'exact' or 'neumann'"),
        ({"classes": 1}, "classes must be >= 2"),
        ({"image_shape": (0, 8)}, r"shape must be a pair \(H, W\)"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"neumann_terms": 0}, "neumann_terms must be >= 1"),
        ({"max_iter": 0}, "max_iter must be >= 1"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"tol": 0.0}, "tol must be a finite number > 0"),
        ({"init_scale": 0.0}, "init_scale must be a finite number > 0"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_config_rejects_bad_values(options, message):
    with pytest.raises(ValueError, match=message):
        Config(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 2.5}, "steps must be an integer"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"T": "long"}, "T must be a number"),
    ],
)
def test_config_rejects_bad_types(options, message):
    with pytest.raises(TypeError, match=message):
        Config(**options)


def test_config_dict_round_trip_and_unknown_keys():
    config = Config(structure="conv", kernel_size=5, steps=3, T=1.5, method="implicit_euler")
    data = json.loads(json.dumps(config.to_dict()))
    assert Config.from_dict(data) == config
    assert Config(steps=4, T=1.0).h == 0.25
    with pytest.raises(ValueError, match=r"unknown configuration keys \['colour'\]"):
        Config.from_dict({**data, "colour": "red"})


# --- weights files --------------------------------------------------------------------------


@pytest.mark.parametrize("config", [Config(), Config(structure="conv", kernel_size=5)])
def test_weights_round_trip_is_exact(tmp_path, config):
    params = random_params(config, seed=8)
    written = save_weights(tmp_path / "sub" / "w.npz", config, params)
    assert written == tmp_path / "sub" / "w.npz"
    loaded_config, loaded = load_weights(str(written), expect=config)
    assert loaded_config == config
    assert set(loaded) == set(params)
    for name in params:
        assert loaded[name].dtype == np.float64
        assert np.array_equal(loaded[name], params[name]), name
    assert os.listdir(tmp_path / "sub") == ["w.npz"]


def test_weights_from_another_training_run_load_with_expect(tmp_path):
    saved = Config(epochs=3, lr=1e-3, seed=9)
    save_weights(tmp_path / "w.npz", saved, init_params(saved))
    loaded, _ = load_weights(tmp_path / "w.npz", expect=Config())
    assert loaded == saved


@pytest.fixture
def weights_file(tmp_path):
    config = Config(structure="conv")
    return save_weights(tmp_path / "w.npz", config, random_params(config, seed=10))


def rewrite(path, **changes):
    """Rewrite a weights file with some arrays replaced (``None`` drops one)."""
    with np.load(path) as archive:
        contents = {k: archive[k] for k in archive.files}
    contents.update(changes)
    np.savez(path, **{k: v for k, v in contents.items() if v is not None})


def test_load_weights_errors_are_value_errors():
    assert issubclass(WeightsError, ValueError)


def test_load_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tmp_path / "absent.npz")


def test_load_random_bytes(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(11).bytes(2000))
    with pytest.raises(WeightsError, match="corrupt"):
        load_weights(path)


def load_error(path):
    """The message of the WeightsError that loading ``path`` raises, and any ResourceWarning.

    The error is dropped before collecting garbage, so that a file object only its traceback
    keeps alive is finalised (and warns, if left open) here rather than in a later test.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            load_weights(path)
        except WeightsError as exc:
            message = str(exc)
        else:
            message = None
        gc.collect()
    return message, [w for w in caught if issubclass(w.category, ResourceWarning)]


def truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])


TRUNCATIONS = [0, 30, 0.5, -22]


@pytest.mark.parametrize("keep", TRUNCATIONS)
def test_load_truncated_file(weights_file, keep):
    truncate(weights_file, keep)
    message, _ = load_error(weights_file)
    assert message is not None and "corrupt" in message


@pytest.mark.parametrize("keep", TRUNCATIONS)
def test_load_truncated_file_closes_it(weights_file, keep):
    truncate(weights_file, keep)
    _, leaks = load_error(weights_file)
    assert leaks == []


def test_load_file_with_damaged_array_data(weights_file):
    data = bytearray(weights_file.read_bytes())
    offset = data.index(b"C.npy") + 200  # inside C's values, guarded by the zip CRC
    data[offset] ^= 0xFF
    weights_file.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        load_weights(weights_file)


def test_load_npz_without_format_tag(weights_file):
    rewrite(weights_file, format=None)
    with pytest.raises(WeightsError, match="not an xbarode weights file"):
        load_weights(weights_file)


def test_load_npz_with_another_format_tag(weights_file):
    rewrite(weights_file, format=np.array("xbarode-weights/0"))
    with pytest.raises(WeightsError, match="not an xbarode weights file"):
        load_weights(weights_file)


def test_load_wrong_array_shape(weights_file):
    rewrite(weights_file, B=np.zeros((5, 5)))
    with pytest.raises(WeightsError, match=r"B has shape \(5, 5\)"):
        load_weights(weights_file)


def test_load_missing_array(weights_file):
    rewrite(weights_file, d=None)
    with pytest.raises(WeightsError, match="lacks the array 'd'"):
        load_weights(weights_file)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_load_non_finite_values(weights_file, bad):
    C = np.zeros((10, 64))
    C[3, 4] = bad
    rewrite(weights_file, C=C)
    with pytest.raises(WeightsError, match="non-finite"):
        load_weights(weights_file)


@pytest.mark.parametrize("config", ["{not json", json.dumps({"structure": "ring"}), "[1, 2]"])
def test_load_bad_configuration(weights_file, config):
    rewrite(weights_file, config=np.array(config))
    with pytest.raises(WeightsError, match="bad configuration"):
        load_weights(weights_file)


@pytest.mark.parametrize(
    ("expect", "field"),
    [(Config(structure="dense"), "structure"), (Config(structure="conv", kernel_size=5),
                                                "kernel_size")],
)
def test_load_with_expect_from_another_configuration(weights_file, expect, field):
    with pytest.raises(WeightsError, match=f"from another configuration: {field}"):
        load_weights(weights_file, expect=expect)


def malformed_npy_header(path):
    """A zip whose member has an unterminated .npy header dictionary."""
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (3, "
    header += b" " * (63 - len(header) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(24)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("A.npy", npy)


def unsupported_compression(path):
    """An .npz whose central directory names compression method 99."""
    buffer = io.BytesIO()
    np.savez(buffer, A=np.zeros(3))
    data = bytearray(buffer.getvalue())
    entry = data.rfind(b"PK\x01\x02")
    data[entry + 10:entry + 12] = struct.pack("<H", 99)
    path.write_bytes(bytes(data))


def plain_npy(path):
    """A valid .npy file (not an archive) under an .npz name."""
    with open(path, "wb") as handle:
        np.save(handle, np.zeros(3))


@pytest.mark.parametrize(
    "make",
    [
        malformed_npy_header,
        unsupported_compression,
        plain_npy,
    ],
)
def test_load_other_malformed_files(tmp_path, make):
    path = tmp_path / "w.npz"
    make(path)
    with pytest.raises(WeightsError):
        load_weights(path)


def test_save_weights_with_missing_parameter_leaves_nothing(tmp_path):
    config = Config()
    params = init_params(config)
    del params["d"]
    with pytest.raises(KeyError):
        save_weights(tmp_path / "w.npz", config, params)
    assert os.listdir(tmp_path) == []


def test_save_weights_failing_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    config = Config(structure="conv")
    old = save_weights(tmp_path / "w.npz", config, random_params(config, seed=12))
    before = old.read_bytes()

    def broken_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(train_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_weights(old, config, init_params(config))
    assert os.listdir(tmp_path) == ["w.npz"]
    assert old.read_bytes() == before


def test_a_finite_blow_up_is_divergence(monkeypatch):
    # float64 SGD can blow the weights up to losses of 1e37 while every number stays finite;
    # that must not be reported as a trained network.
    train_module = importlib.import_module("xbarode.model.train")
    losses = iter([2.3, 5e5, 2e6])
    real = train_module._float_stepper

    def stepper(config):
        _, params, overflows = real(config)
        return (lambda x, y: next(losses)), params, overflows

    monkeypatch.setattr(train_module, "_float_stepper", stepper)
    config = Config(epochs=1, batch_size=600)
    with pytest.raises(train_module.TrainingDiverged,
                       match=r"^training diverged in epoch 1 of 1 \(a batch's loss reached "
                             r"2e\+06\): the learning rate 0\.125 is too large"):
        train_module.train(config)
    assert train_module.DIVERGED_LOSS == 1e6
