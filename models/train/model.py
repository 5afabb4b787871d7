"""The router model in plain numpy (forward, backward, Adam), so training needs no deep-learning
framework and is bit-for-bit reproducible on CPU.

Graph (same as the exported ONNX):
    e      = E[input_ids]                      E = T0 @ P  (T0: frozen MiniLM token table, 30522x384)
    mean   = sum_t(e * m) / max(n, 1)          n = sum_t(m)
    mx     = max_t(e + (m - 1) * 1e4)
    x      = [mean, mx, log(max(n,1)) * LEN_SCALE]
    h      = relu(x @ W1 + b1)         -> category logits = h @ W2 + b2 -> softmax
    g      = relu(x @ W4 + b4)         -> strong logit    = g @ w5 + b5 -> sigmoid
"""
import numpy as np

LEN_SCALE = 0.25
NEG = 1e4


class Adam:
    def __init__(self, params, lr=2e-3, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, b1, b2, eps, wd
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for k, g in grads.items():
            if self.wd and k.startswith("W"):
                g = g + self.wd * params[k]
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] -= lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


class RouterModel:
    def __init__(self, T0, P0, n_cat=8, hidden=128, s_hidden=32, seed=0, delta=False):
        rng = np.random.default_rng(seed)
        self.T0 = T0.astype(np.float32)
        d = P0.shape[1]
        self.d = d
        fin = 2 * d + 1

        def glorot(a, b):
            return (rng.standard_normal((a, b)) * np.sqrt(2.0 / (a + b))).astype(np.float32)
        self.p = {
            "P": P0.astype(np.float32).copy(),
            "W1": glorot(fin, hidden), "b1": np.zeros(hidden, np.float32),
            "W2": glorot(hidden, n_cat), "b2": np.zeros(n_cat, np.float32),
            "W4": glorot(fin, s_hidden), "b4": np.zeros(s_hidden, np.float32),
            "w5": glorot(s_hidden, 1), "b5": np.zeros(1, np.float32),
        }
        if delta:
            # trainable per-token correction on top of the projected teacher table
            self.p["D"] = np.zeros((T0.shape[0], d), np.float32)
        self.rng = rng

    # ---- forward -------------------------------------------------------------------------
    def forward(self, ids, mask, train=False, drop=0.1):
        p = self.p
        m = mask.astype(np.float32)
        g0 = self.T0[ids]                                  # B,T,384
        e = g0 @ p["P"]                                    # B,T,D
        if "D" in p:
            e = e + p["D"][ids]
        n = np.maximum(m.sum(1, keepdims=True), 1.0)       # B,1
        mean = (e * m[:, :, None]).sum(1) / n
        em = e + (m[:, :, None] - 1.0) * NEG
        arg = em.argmax(1)                                 # B,D
        mx = np.take_along_axis(em, arg[:, None, :], 1)[:, 0, :]
        lf = np.log(n) * LEN_SCALE
        x = np.concatenate([mean, mx, lf], 1).astype(np.float32)
        dmask_x = None
        if train and drop > 0:
            dmask_x = (self.rng.random(x.shape) >= drop).astype(np.float32) / (1 - drop)
            x = x * dmask_x
        hp = x @ p["W1"] + p["b1"]
        h = np.maximum(hp, 0)
        dmask_h = None
        if train and drop > 0:
            dmask_h = (self.rng.random(h.shape) >= drop).astype(np.float32) / (1 - drop)
            h = h * dmask_h
        logits = h @ p["W2"] + p["b2"]
        gp = x @ p["W4"] + p["b4"]
        gg = np.maximum(gp, 0)
        slog = (gg @ p["w5"] + p["b5"])[:, 0]
        cache = dict(ids=ids, m=m, g0=g0, n=n, arg=arg, x=x, dmask_x=dmask_x, hp=hp, h=h,
                     dmask_h=dmask_h, gp=gp, gg=gg)
        return logits, slog, cache

    def predict(self, ids, mask, batch=256):
        cp, sp = [], []
        for i in range(0, len(ids), batch):
            lo, sl, _ = self.forward(ids[i:i + batch], mask[i:i + batch])
            cp.append(softmax(lo))
            sp.append(sigmoid(sl))
        return np.concatenate(cp), np.concatenate(sp)

    # ---- backward ------------------------------------------------------------------------
    def backward(self, dlogits, dslog, c):
        p = self.p
        gr = {}
        h = c["h"]
        gr["W2"] = h.T @ dlogits
        gr["b2"] = dlogits.sum(0)
        dh = dlogits @ p["W2"].T
        if c["dmask_h"] is not None:
            dh = dh * c["dmask_h"]
        dhp = dh * (c["hp"] > 0)
        gr["W1"] = c["x"].T @ dhp
        gr["b1"] = dhp.sum(0)
        dx = dhp @ p["W1"].T
        ds = dslog[:, None]
        gr["w5"] = c["gg"].T @ ds
        gr["b5"] = ds.sum(0)
        dgg = ds @ p["w5"].T
        dgp = dgg * (c["gp"] > 0)
        gr["W4"] = c["x"].T @ dgp
        gr["b4"] = dgp.sum(0)
        dx = dx + dgp @ p["W4"].T
        if c["dmask_x"] is not None:
            dx = dx * c["dmask_x"]
        d = self.d
        dmean, dmx = dx[:, :d], dx[:, d:2 * d]
        m, n = c["m"], c["n"]
        de = (dmean / n)[:, None, :] * m[:, :, None]       # B,T,D
        b_idx = np.arange(de.shape[0])[:, None]
        d_idx = np.arange(d)[None, :]
        np.add.at(de, (b_idx, c["arg"], d_idx), dmx)
        g0 = c["g0"]
        gr["P"] = g0.reshape(-1, g0.shape[-1]).T @ de.reshape(-1, d)
        if "D" in p:
            gd = np.zeros_like(p["D"])
            np.add.at(gd, c["ids"].ravel(), de.reshape(-1, d))
            gr["D"] = gd
        return gr

    def export_table(self):
        t = self.T0 @ self.p["P"]
        if "D" in self.p:
            t = t + self.p["D"]
        return t.astype(np.float32)


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))
