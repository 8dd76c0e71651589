"""Plain helpers shared by test modules (``tests/`` is on the import path, see pyproject)."""

import json

import numpy as np

from xbarode.cli import main


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
