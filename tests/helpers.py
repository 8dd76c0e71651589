"""Plain helpers shared by test modules (``tests/`` is on the import path, see pyproject)."""

import dataclasses
import json

import numpy as np
from amaranth.hdl import Fragment, Module

from xbarode.cli import main


def elaborated(component):
    """``component``'s module, for a test to look into: elaborated as a design is
    (``Fragment.get``, so the component and its parts count as used), the module taken from
    the fragment's origins (the component and what it elaborated to)."""
    return next(origin for origin in Fragment.get(component, None).origins
                if isinstance(origin, Module))


def assert_close(actual, expected, rtol=1e-10):
    """Assert equal shapes and ``max|actual - expected| <= rtol * max|expected|``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    error = np.abs(actual - expected).max(initial=0.0)
    assert error <= rtol * np.abs(expected).max(initial=0.0), error


def run(capsys, *argv):
    """Run ``xbarode ARGV`` in-process; returns (exit status, stdout, stderr)."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exc:  # argparse: --help, --version and usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out):
    """The JSON object on the last line of stdout."""
    lines = out.strip().splitlines()
    assert lines, "nothing on stdout"
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


def first_seed(accept, start=0, tries=200):
    """The first seed ``start, start + 1, …`` whose draw ``accept(seed)`` takes.

    Tests whose comparison proves something only for some draws (live activations, a non-zero
    reference) choose their seed with this rule instead of by hand.
    """
    for seed in range(start, start + tries):
        if accept(seed):
            return seed
    raise AssertionError(f"no seed in [{start}, {start + tries}) satisfies {accept.__name__}")


#: The smallest fraction of relu inputs that must be positive at every step for a comparison
#: through the relu to test B (and the gradients through it).
LIVE_FRACTION = 0.1


def relu_inputs(config, params, images):
    """The relu inputs ``u = A z`` of the core's fixed-point model, shape (steps, images, m).

    Float products of the dequantised ``A`` with the model's state words at the point each step
    evaluates the relu: ``z_n`` for explicit Euler, the step's result ``z_{n+1}`` for implicit
    Euler (the Newton fixed point, where the adjoint differentiates). On the Fourier path,
    the dequantised kernel's convolution matrix.
    """
    from xbarode.sim.core_plan import core_params, model_network

    net = model_network(config, params)
    _, trajectory, _ = net.forward(np.asarray(images, dtype=np.float64))
    f = config.formats()
    states = f.state.to_float(trajectory)
    states = states[1:] if config.method == "implicit_euler" else states[:-1]
    dense = dataclasses.replace(config, conv_path="direct")
    a = f.weight.to_float(f.weight.quantize(core_params(dense, params)["A"], "nearest"))
    return states @ a.T


def positive_fraction(u):
    """The smallest fraction, over the first axis (the steps), of positive entries of ``u``."""
    u = np.asarray(u)
    return float((u > 0).reshape(len(u), -1).mean(axis=1).min())


def live_fraction(config, params, images):
    """The smallest fraction, over the steps, of positive relu inputs (:func:`relu_inputs`)."""
    return positive_fraction(relu_inputs(config, params, images))


class Draws:
    """A stand-in for ``st.data()`` in an ``@example``: ``draw`` returns the given values in
    order, whatever the strategy (hypothesis cannot replay ``data`` draws in examples)."""

    def __init__(self, *values):
        self._values = list(values)

    def draw(self, strategy, label=None):
        assert self._values, "the example has fewer values than the test draws"
        return self._values.pop(0)

    def __repr__(self):
        return f"Draws{tuple(self._values)}"
