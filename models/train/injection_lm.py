#!/usr/bin/env python3
"""Trains the learned injection signal: a logistic model over hashed word unigrams and bigrams.

usage: python3 models/train/injection_lm.py /work/shared/data/injection/dev.jsonl [--out models/injection_lm.bin]

Reproducible (fixed seeds, numpy only). Features mirror src/scanner/learned.rs exactly: the text is
lowercased per char, split into maximal runs of alphanumeric chars (at most MAX_TOKENS tokens), each
token and each adjacent pair "a b" is hashed with 32-bit FNV-1a over its UTF-8 bytes into NB buckets;
features are binary (a bucket counts once). Output: little-endian f32 weights (NB of them) then the bias.
Prints 5-fold cross-validation by split_group (held-out groups) so the reported figure is honest.
"""
import argparse, json, struct
import numpy as np

NB = 1 << 15
MAX_TOKENS = 2000


def fnv1a(b):
    h = 0x811C9DC5
    for x in b:
        h = ((h ^ x) * 0x01000193) & 0xFFFFFFFF
    return h


def tokens(text):
    out, cur = [], []
    for c in text:
        if c.isalnum():
            cur.append(c.lower())
        elif cur:
            out.append("".join(cur)); cur = []
            if len(out) >= MAX_TOKENS:
                return out
    if cur and len(out) < MAX_TOKENS:
        out.append("".join(cur))
    return out


def feats(text):
    t = tokens(text)
    f = set()
    for i, x in enumerate(t):
        f.add(fnv1a(x.encode()) & (NB - 1))
        if i:
            f.add(fnv1a((t[i - 1] + " " + x).encode()) & (NB - 1))
    return np.array(sorted(f), dtype=np.int64)


def train(X, y, idx, epochs=8, lr=0.2, l2=1e-5):
    w = np.zeros(NB); b = 0.0
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for i in rng.permutation(idx):
            f = X[i]
            p = 1 / (1 + np.exp(-(w[f].sum() + b)))
            g = p - y[i]
            w[f] -= lr * g / np.sqrt(len(f) + 1)
            b -= lr * g * 0.1
            w[f] *= 1 - l2
    return w, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--out", default="models/injection_lm.bin")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.data, encoding="utf-8") if l.strip()]
    X = [feats(r["prompt"]) for r in rows]
    y = np.array([r["label"] == "injection" for r in rows], float)
    groups = [r.get("split_group") or r["id"] for r in rows]
    ug = sorted(set(groups))
    fold = {g: k % 5 for k, g in enumerate(np.random.default_rng(1).permutation(ug))}
    sc = np.zeros(len(rows))
    for k in range(5):
        tr = [i for i in range(len(rows)) if fold[groups[i]] != k]
        w, b = train(X, y, tr)
        for i in range(len(rows)):
            if fold[groups[i]] == k:
                sc[i] = w[X[i]].sum() + b
    ben = y == 0
    for thr in (2.0, 2.5, 3.0, 3.5, 4.0):
        hit = sc > thr
        print(f"cv threshold {thr}: TPR {hit[~ben].mean():.4f} FPR {hit[ben].mean():.4f}")
    w, b = train(X, y, list(range(len(rows))))
    with open(a.out, "wb") as f:
        f.write(struct.pack(f"<{NB}f", *w.astype(np.float32)))
        f.write(struct.pack("<f", b))
    print(f"wrote {a.out}: {NB} weights + bias")


if __name__ == "__main__":
    main()
