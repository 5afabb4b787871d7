"""The router model in plain numpy (forward, backward, Adam with lazy row updates for the embedding
tables), so training needs no deep-learning framework and is reproducible on CPU.

Graph (same as the exported ONNX):
    e      = E[input_ids]                      E = T0 @ P + D  (T0: frozen MiniLM token table)
    m      = float(attention_mask), n = max(sum_t m, 1)
    mean   = sum_t(e * m) / n
    mx     = max_t(e + (m - 1) * 1e4)
    h_t    = (ids[t] * BIGRAM_MUL + ids[t+1]) mod BIGRAM_BUCKETS         hashed token bigrams
    mb_t   = m[t] * m[t+1];  bmean = sum_t(B[h_t] * mb_t) / max(sum_t mb_t, 1)
    x      = [mean, mx, bmean, log(n) * LEN_SCALE]
    h      = relu(x @ W1 + b1)  -> category logits = h @ W2 + b2 -> softmax
    aux    = x @ Wt (training only): regresses the all-MiniLM-L6-v2 sentence embedding (distillation)
The strong head is fitted separately (see strong.py) on log length and category probabilities.
"""
import numpy as np

LEN_SCALE = 0.25
NEG = 1e4
BIGRAM_MUL = 30529            # prime > vocab size
DEFAULT_BUCKETS = 1 << 17


def bigram_hash(ids, buckets):
    return (ids[:, :-1].astype(np.int64) * BIGRAM_MUL + ids[:, 1:]) % buckets


class Adam:
    """Adam; parameters listed in `sparse` get lazy row-wise updates (only rows seen in the batch)."""

    def __init__(self, params, lr=2e-3, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, sparse=()):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, b1, b2, eps, wd
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0
        self.sparse = set(sparse)

    def step(self, params, grads, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for k, g in grads.items():
            if k in self.sparse:
                rows, gr = g
                m = self.b1 * self.m[k][rows] + (1 - self.b1) * gr
                v = self.b2 * self.v[k][rows] + (1 - self.b2) * gr * gr
                self.m[k][rows] = m
                self.v[k][rows] = v
                params[k][rows] -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
                continue
            if self.wd and k.startswith("W"):
                g = g + self.wd * params[k]
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] -= lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def _rows_grad(idx, g, wd=0.0, table=None):
    """Aggregate per-position gradients g [N, D] into unique rows of idx [N]."""
    rows, inv = np.unique(idx, return_inverse=True)
    out = np.zeros((len(rows), g.shape[1]), np.float32)
    np.add.at(out, inv, g)
    if wd and table is not None:
        out += wd * table[rows]
    return rows, out


class RouterModel:
    def __init__(self, T0, P0, n_cat=8, hidden=128, seed=0, buckets=DEFAULT_BUCKETS, bigram=True,
                 use_max=True, t_dim=0):
        rng = np.random.default_rng(seed)
        self.T0 = T0.astype(np.float32)
        d = P0.shape[1]
        self.d = d
        self.bigram = bigram
        self.use_max = use_max
        self.buckets = buckets
        fin = d * (1 + int(use_max) + int(bigram)) + 1
        self.fin = fin

        def glorot(a, b):
            return (rng.standard_normal((a, b)) * np.sqrt(2.0 / (a + b))).astype(np.float32)
        self.p = {
            "P": P0.astype(np.float32).copy(),
            "D": np.zeros((T0.shape[0], d), np.float32),
            "W1": glorot(fin, hidden), "b1": np.zeros(hidden, np.float32),
            "W2": glorot(hidden, n_cat), "b2": np.zeros(n_cat, np.float32),
        }
        if bigram:
            self.p["B"] = np.zeros((buckets, d), np.float32)
        if t_dim:
            self.p["Wt"] = glorot(fin, t_dim)
            self.p["bt"] = np.zeros(t_dim, np.float32)
        self.rng = rng

    sparse_params = ("D", "B")

    # ---- forward -------------------------------------------------------------------------
    def forward(self, ids, mask, train=False, drop=0.1):
        p = self.p
        m = mask.astype(np.float32)
        g0 = self.T0[ids]                                  # B,T,384
        e = g0 @ p["P"] + p["D"][ids]                      # B,T,D
        n = np.maximum(m.sum(1, keepdims=True), 1.0)       # B,1
        feats = [(e * m[:, :, None]).sum(1) / n]
        arg = None
        if self.use_max:
            em = e + (m[:, :, None] - 1.0) * NEG
            arg = em.argmax(1)                             # B,D
            feats.append(np.take_along_axis(em, arg[:, None, :], 1)[:, 0, :])
        hb = mb = nb = None
        if self.bigram:
            hb = bigram_hash(ids, self.buckets)            # B,T-1
            mb = m[:, :-1] * m[:, 1:]
            nb = np.maximum(mb.sum(1, keepdims=True), 1.0)
            feats.append((p["B"][hb] * mb[:, :, None]).sum(1) / nb)
        feats.append(np.log(n) * LEN_SCALE)
        x = np.concatenate(feats, 1).astype(np.float32)
        dmask_x = None
        xd = x
        if train and drop > 0:
            dmask_x = (self.rng.random(x.shape) >= drop).astype(np.float32) / (1 - drop)
            xd = x * dmask_x
        hp = xd @ p["W1"] + p["b1"]
        h = np.maximum(hp, 0)
        dmask_h = None
        if train and drop > 0:
            dmask_h = (self.rng.random(h.shape) >= drop).astype(np.float32) / (1 - drop)
            h = h * dmask_h
        logits = h @ p["W2"] + p["b2"]
        aux = xd @ p["Wt"] + p["bt"] if "Wt" in p else None
        cache = dict(ids=ids, m=m, g0=g0, n=n, arg=arg, x=x, xd=xd, dmask_x=dmask_x, hp=hp, h=h,
                     dmask_h=dmask_h, hb=hb, mb=mb, nb=nb)
        return logits, aux, cache

    def predict(self, ids, mask, batch=256):
        cp, xs = [], []
        for i in range(0, len(ids), batch):
            lo, _, c = self.forward(ids[i:i + batch], mask[i:i + batch])
            cp.append(softmax(lo))
            xs.append(c["x"])
        return np.concatenate(cp), np.concatenate(xs)

    # ---- backward ------------------------------------------------------------------------
    def backward(self, dlogits, daux, c, emb_wd=0.0):
        p = self.p
        gr = {}
        h = c["h"]
        gr["W2"] = h.T @ dlogits
        gr["b2"] = dlogits.sum(0)
        dh = dlogits @ p["W2"].T
        if c["dmask_h"] is not None:
            dh = dh * c["dmask_h"]
        dhp = dh * (c["hp"] > 0)
        gr["W1"] = c["xd"].T @ dhp
        gr["b1"] = dhp.sum(0)
        dx = dhp @ p["W1"].T
        if daux is not None:
            gr["Wt"] = c["xd"].T @ daux
            gr["bt"] = daux.sum(0)
            dx = dx + daux @ p["Wt"].T
        if c["dmask_x"] is not None:
            dx = dx * c["dmask_x"]
        d = self.d
        m, n = c["m"], c["n"]
        de = (dx[:, :d] / n)[:, None, :] * m[:, :, None]   # B,T,D
        off = d
        if self.use_max:
            dmx = dx[:, off:off + d]
            b_idx = np.arange(de.shape[0])[:, None]
            d_idx = np.arange(d)[None, :]
            np.add.at(de, (b_idx, c["arg"], d_idx), dmx)
            off += d
        g0 = c["g0"]
        gr["P"] = g0.reshape(-1, g0.shape[-1]).T @ de.reshape(-1, d)
        ids = c["ids"]
        keep = c["m"].ravel() > 0
        gr["D"] = _rows_grad(ids.ravel()[keep], de.reshape(-1, d)[keep], emb_wd, p["D"])
        if self.bigram:
            db = (dx[:, off:off + d] / c["nb"])[:, None, :] * c["mb"][:, :, None]   # B,T-1,D
            kb = c["mb"].ravel() > 0
            gr["B"] = _rows_grad(c["hb"].ravel()[kb], db.reshape(-1, d)[kb], emb_wd, p["B"])
        return gr

    def export_table(self):
        return (self.T0 @ self.p["P"] + self.p["D"]).astype(np.float32)


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))
