"""Classifier head: ``logits = C·z_N + d`` and softmax cross-entropy (docs/architecture.md §1)."""

from __future__ import annotations

import numpy as np

__all__ = ["head_grads", "logits", "softmax_cross_entropy"]


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
