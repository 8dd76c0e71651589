"""Classifier head: ``logits = C·pool(z_N) + d`` and softmax cross-entropy
(docs/architecture.md §1), and the augmented start state of a multi-channel network."""

from __future__ import annotations

import numpy as np

__all__ = ["augment", "avg_pool", "avg_pool_grad", "head_grads", "logits",
           "softmax_cross_entropy"]


def augment(x: np.ndarray, channels: int) -> np.ndarray:
    """The start state of a ``channels``-channel network: the image in channel 0, zeros in the
    others (the augmented neural ODE of Dupont et al. 2019).

    ``x`` is (batch, m); the result is (batch, channels·m), channel by channel. One channel
    returns ``x`` itself.
    """
    if channels == 1:
        return x
    state = np.zeros((*x.shape[:-1], channels * x.shape[-1]))
    state[..., :x.shape[-1]] = x
    return state


def _pool_shape(z: np.ndarray, channels: int, shape, factor: int) -> tuple[int, ...]:
    height, width = shape
    if height % factor or width % factor:
        raise ValueError(f"pool {factor} does not divide the {height}x{width} image")
    if z.shape[-1] != channels * height * width:
        raise ValueError(f"the state has {z.shape[-1]} entries, not {channels}x{height}x{width}")
    return (*z.shape[:-1], channels, height // factor, factor, width // factor, factor)


def avg_pool(z: np.ndarray, channels: int, shape, factor: int) -> np.ndarray:
    """Average over ``factor``×``factor`` blocks of every channel's H×W image.

    ``z`` is (..., channels·H·W), channel by channel, each image row-major; the result is
    (..., channels·(H/factor)·(W/factor)) in the same order. ``factor = 1`` returns ``z``.
    """
    if factor == 1:
        return z
    blocks = z.reshape(_pool_shape(z, channels, shape, factor))
    return blocks.mean(axis=(-1, -3)).reshape(*z.shape[:-1], -1)


def avg_pool_grad(grad: np.ndarray, channels: int, shape, factor: int) -> np.ndarray:
    """The transpose of :func:`avg_pool`: each pooled entry's gradient spread evenly, divided by
    ``factor²``, over its block. ``grad`` is (..., channels·(H/factor)·(W/factor))."""
    if factor == 1:
        return grad
    height, width = shape
    pooled = grad.reshape(*grad.shape[:-1], channels, height // factor, 1, width // factor, 1)
    spread = np.broadcast_to(pooled / factor**2, (*pooled.shape[:-4], height // factor, factor,
                                                  width // factor, factor))
    return spread.reshape(*grad.shape[:-1], channels * height * width)


def logits(C: np.ndarray, d: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``C·z + d`` for each state in the last axis of ``z``; ``C`` is (classes, m)."""
    return z @ C.T + d


def softmax_cross_entropy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over a batch and its gradient with respect to the logits.

    Parameters
    ----------
    scores : ndarray, shape (batch, classes)
        Logits.
    labels : ndarray of int, shape (batch,)
        Class indices in ``[0, classes)``.

    Returns
    -------
    loss : float
        ``mean_b(-log softmax(scores_b)[labels_b])``, computed stably (max subtracted).
    grad : ndarray, shape (batch, classes)
        ``∂loss/∂scores = (softmax(scores) - onehot(labels)) / batch``.
    """
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(
            f"scores must be (batch, classes) and labels (batch,), not {scores.shape} and "
            f"{labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in [0, {scores.shape[1]})")
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(scores.shape[0])
    loss = float(-log_probs[rows, labels].mean())
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1.0
    return loss, grad / scores.shape[0]


def head_grads(grad_scores: np.ndarray, z: np.ndarray, C: np.ndarray):
    """Gradients of the head: ``(∂L/∂C, ∂L/∂d, ∂L/∂z)`` from ``∂L/∂logits``."""
    return grad_scores.T @ z, grad_scores.sum(axis=0), grad_scores @ C
