"""The low-capacity `strong_prob` head: a logistic regression on the log prompt length and the
category probabilities (and their products with the log length), 17 weights plus a bias.

    lz        = (log(n) - mu) / sd                 n = number of kept ids (<= 128)
    f         = [lz, probs(8), lz * probs(8)]
    strong    = sigmoid(f @ w + b)

It is fitted on out-of-fold category probabilities (so it sees probabilities as sharp as on unseen
prompts) of the rows that carry per-model outcomes; higher capacity heads overfit the 745
GPT-4/Mixtral rows (see README).
"""
import numpy as np


def features(logn, probs, mu, sd, inter=True):
    lz = ((logn - mu) / sd)[:, None]
    parts = [lz, probs]
    if inter:
        parts.append(lz * probs)
    return np.hstack(parts).astype(np.float64)


def fit(F, y, w, l2=0.01, iters=3000, lr=0.5):
    """Weighted logistic regression (soft targets y in [0, 1]) by full-batch gradient descent
    (deterministic)."""
    coef = np.zeros(F.shape[1])
    b = 0.0
    ws = w / w.sum()
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(F @ coef + b)))
        r = (p - y) * ws
        coef -= lr * (F.T @ r + l2 * coef)
        b -= lr * r.sum()
    return coef, b


def predict(F, coef, b):
    return 1.0 / (1.0 + np.exp(-(F @ coef + b)))
