#!/usr/bin/env python3
"""Train tierflow's routing classifier (numpy only), cross-validate it, export models/router.onnx
and models/tokenizer.json, and write models/train/scores.json.

usage: train.py [--data PATH] [--out MODELS_DIR] [--folds 5] [--no-cv] [--seed 1234]
Default data: ../shared/data/routing/dev.jsonl relative to the repo root.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
from common import CATEGORIES, STRONG, WEAK  # noqa: E402
from model import Adam, RouterModel, sigmoid, softmax  # noqa: E402
import export_onnx  # noqa: E402

CFG = dict(s_mode="weak_fails", max_folds=99, delta=1, d_wd=0.0, dim=64, hidden=128, s_hidden=16, epochs=20, batch=32, lr=3e-3, wd=1e-4, drop=0.1,
           tok_drop=0.1, smooth=0.05, s_lambda=1.0, warmup=100)


# ---------------------------------------------------------------------------------------------
def teacher_table():
    from safetensors.numpy import load_file
    d = load_file(os.path.join(common.teacher_dir(), "model.safetensors"))
    t0 = d["embeddings.word_embeddings.weight"].astype(np.float32)
    t0 = t0 - t0.mean(0, keepdims=True)
    t0 = t0 / t0.std()
    return t0


def pca_init(t0, dim):
    cov = (t0.T @ t0) / len(t0)
    w, v = np.linalg.eigh(cov.astype(np.float64))
    order = np.argsort(w)[::-1][:dim]
    p0 = v[:, order]
    # deterministic sign: largest-magnitude entry of each component positive
    signs = np.sign(p0[np.abs(p0).argmax(0), np.arange(dim)])
    return (p0 * signs).astype(np.float32)


def write_tokenizer(dst):
    with open(os.path.join(common.teacher_dir(), "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["truncation"] = None
    tj["padding"] = None
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
def make_folds(groups, cats, k, seed):
    """Grouped, category-stratified folds: each group goes to the fold with the fewest rows of
    its majority category (groups visited in seeded random order)."""
    rng = np.random.default_rng(seed)
    uniq = sorted(set(groups))
    rng.shuffle(uniq)
    members = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    counts = np.zeros((k, len(CATEGORIES)))
    fold_of = {}
    for g in uniq:
        idx = members[g]
        c = np.bincount([cats[i] for i in idx], minlength=len(CATEGORIES)).argmax()
        f = int(np.lexsort((counts.sum(1), counts[:, c]))[0])
        fold_of[g] = f
        counts[f] += np.bincount([cats[i] for i in idx], minlength=len(CATEGORIES))
    return np.array([fold_of[g] for g in groups])


def train_model(t0, p0, ids_list, cats, s_t, s_w, cfg, seed):
    model = RouterModel(t0, p0, hidden=cfg["hidden"], s_hidden=cfg["s_hidden"], seed=seed, delta=bool(cfg["delta"]))
    rng = np.random.default_rng(seed + 1)
    n = len(ids_list)
    cnt = np.bincount(cats, minlength=len(CATEGORIES)).astype(np.float64)
    cw = np.where(cnt > 0, np.sqrt(cnt.sum() / (len(CATEGORIES) * np.maximum(cnt, 1))), 0.0)
    cw = (cw / (cw[cats].mean())).astype(np.float32)
    opt = Adam(model.p, lr=cfg["lr"], wd=cfg["wd"])
    steps_per_epoch = (n + cfg["batch"] - 1) // cfg["batch"]
    total = steps_per_epoch * cfg["epochs"]
    step = 0
    k = len(CATEGORIES)
    for ep in range(cfg["epochs"]):
        order = rng.permutation(n)
        for b in range(0, n, cfg["batch"]):
            idx = order[b:b + cfg["batch"]]
            ids, mask = common.pad([ids_list[i] for i in idx])
            if cfg["tok_drop"] > 0:
                lens = mask.sum(1)
                drop = rng.random(mask.shape) < cfg["tok_drop"]
                drop[:, 0] = False
                drop[np.arange(len(idx)), lens - 1] = False
                mask = mask * (~drop)
            logits, slog, cache = model.forward(ids, mask, train=True, drop=cfg["drop"])
            y = np.full((len(idx), k), cfg["smooth"] / (k - 1), np.float32)
            y[np.arange(len(idx)), cats[idx]] = 1 - cfg["smooth"]
            w = cw[cats[idx]][:, None]
            B = len(idx)
            dlogits = (softmax(logits) - y) * w / B
            dslog = cfg["s_lambda"] * s_w[idx] * (sigmoid(slog) - s_t[idx]) / B
            grads = model.backward(dlogits.astype(np.float32), dslog.astype(np.float32), cache)
            if step < cfg["warmup"]:
                lr = cfg["lr"] * (step + 1) / cfg["warmup"]
            else:
                lr = cfg["lr"] * 0.5 * (1 + np.cos(np.pi * (step - cfg["warmup"]) / max(1, total - cfg["warmup"])))
            if "D" in grads and cfg["d_wd"]:
                grads["D"] += cfg["d_wd"] * model.p["D"]
            opt.step(model.p, grads, lr=lr)
            step += 1
    return model


def predict(model, ids_list):
    ids, mask = common.pad(ids_list)
    return model.predict(ids, mask)


# ---------------------------------------------------------------------------------------------
def cat_metrics(gold, pred):
    per = {}
    f1s = []
    for c in range(len(CATEGORIES)):
        sup = int((gold == c).sum())
        tp = int(((gold == c) & (pred == c)).sum())
        fp = int(((gold != c) & (pred == c)).sum())
        fn = sup - tp
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        if sup:
            per[CATEGORIES[c]] = dict(precision=round(p, 4), recall=round(r, 4), f1=round(f, 4), support=sup)
            f1s.append(f)
    acc = float((gold == pred).mean())
    conf = {}
    for g, p in zip(gold, pred):
        if g != p:
            key = f"{CATEGORIES[g]}->{CATEGORIES[p]}"
            conf[key] = conf.get(key, 0) + 1
    return dict(accuracy=round(acc, 4), macro_f1=round(float(np.mean(f1s)), 4), per_category=per,
                confusion=dict(sorted(conf.items(), key=lambda kv: -kv[1])))


def router_line(mc_list, strong_calls):
    """Same formula as shared/eval/score.py router_quality."""
    n = len(mc_list)
    q_s = sum(c[STRONG] for c in mc_list) / n
    q_w = sum(c[WEAK] for c in mc_list) / n
    q = sum(c[STRONG] if s else c[WEAK] for c, s in zip(mc_list, strong_calls)) / n
    gap = q_s - q_w
    return dict(rows=n, quality=round(q, 4), quality_strong_only=round(q_s, 4), quality_weak_only=round(q_w, 4),
                strong_call_fraction=round(sum(strong_calls) / n, 4),
                quality_vs_strong=round(q / q_s, 4), pgr=round((q - q_w) / gap, 4) if gap else None)


def router_curve(mc_list, sprob):
    out = {}
    order = np.argsort(-sprob, kind="stable")
    for frac in (0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7):
        k = int(round(frac * len(sprob)))
        calls = np.zeros(len(sprob), bool)
        calls[order[:k]] = True
        out[str(frac)] = router_line(mc_list, list(calls))
    return out


def tier_of(sp, th):
    return 1 + int(sp >= th[0]) + int(sp >= th[1]) + int(sp >= th[2])


# ---------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=common.default_data_path())
    ap.add_argument("--out", default=os.path.normpath(os.path.join(HERE, "..")))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-cv", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--int8", action="store_true", help="int8 per-row quantised embedding table")
    ap.add_argument("--set", action="append", default=[], help="override CFG key=value")
    args = ap.parse_args()
    cfg = dict(CFG)
    for kv in args.set:
        k, v = kv.split("=")
        cfg[k] = type(CFG[k])(v)
    np.random.seed(args.seed)
    t_start = time.time()

    common.STRONG_TARGET["mode"] = cfg["s_mode"]
    rows = common.load_rows(args.data)
    ex = common.examples(rows)
    os.makedirs(args.out, exist_ok=True)
    out_train = os.path.join(args.out, "train")
    os.makedirs(out_train, exist_ok=True)
    tok_path = os.path.join(args.out, "tokenizer.json")
    write_tokenizer(tok_path)
    tok = common.load_tokenizer(tok_path)
    ids_list = common.encode(tok, [e["text"] for e in ex])
    cats = np.array([e["cat"] for e in ex])
    s_t = np.array([e["s_t"] for e in ex], np.float32)
    s_w = np.array([e["s_w"] for e in ex], np.float32)
    groups = [e["group"] for e in ex]
    is_orig = np.array([not e["aug"] for e in ex])
    print(f"{len(rows)} rows, {len(ex)} examples, cfg {cfg}", flush=True)

    t0 = teacher_table()
    p0 = pca_init(t0, cfg["dim"])
    scores = dict(config=cfg, seed=args.seed, data=os.path.basename(args.data), rows=len(rows))

    th = None
    if not args.no_cv:
        folds = make_folds(groups, list(cats), args.folds, args.seed)
        oof_c = np.zeros((len(ex), len(CATEGORIES)), np.float32)
        oof_s = np.zeros(len(ex), np.float32)
        for f in range(min(args.folds, cfg["max_folds"])):
            tr = np.where(folds != f)[0]
            va = np.where(folds == f)[0]
            m = train_model(t0, p0, [ids_list[i] for i in tr], cats[tr], s_t[tr], s_w[tr], cfg, args.seed + f)
            cp, sp = predict(m, [ids_list[i] for i in va])
            oof_c[va], oof_s[va] = cp, sp
            acc = (cp.argmax(1) == cats[va])[is_orig[va]].mean()
            print(f"fold {f}: {len(va)} val, acc {acc:.4f} ({time.time() - t_start:.0f}s)", flush=True)
        done = folds < min(args.folds, cfg["max_folds"])
        o = np.where(is_orig & done)[0]
        cv = cat_metrics(cats[o], oof_c[o].argmax(1))
        by_src = {}
        for i in o:
            s = rows[ex[i]["row"]]["source"]
            by_src.setdefault(s, []).append(oof_c[i].argmax() == cats[i])
        cv["by_source_accuracy"] = {s: round(float(np.mean(v)), 4) for s, v in sorted(by_src.items())}
        mc_idx = [i for i in o if (rows[ex[i]["row"]].get("model_correct") or {}).get(STRONG) is not None]
        mc_list = [rows[ex[i]["row"]]["model_correct"] for i in mc_idx]
        sp_mc = oof_s[mc_idx]
        curve = router_curve(mc_list, sp_mc)
        # Tier thresholds: tier>=3 (strong) threshold = OOF strong_prob quantile giving ~45% strong
        # calls on rows with outcomes; tier 2/4 cut-offs at fixed offsets below/above it.
        t3 = float(np.quantile(sp_mc, 1 - 0.45))
        th = [round(t3 * 0.5, 4), round(t3, 4), round(min(0.95, t3 + 0.5 * (1 - t3)), 4)]
        at_th = router_line(mc_list, [s >= th[1] for s in sp_mc])
        th_rows = [(rows[ex[i]["row"]]["tier_hint"], tier_of(oof_s[i], th)) for i in o]
        cv["tier_hint_exact"] = round(float(np.mean([a == b for a, b in th_rows])), 4)
        cv["tier_hint_within_1"] = round(float(np.mean([abs(a - b) <= 1 for a, b in th_rows])), 4)
        # what the gateway does: requests carrying `tools` are decided as agentic by structure
        pred_gw = oof_c[o].argmax(1)
        has_tools = np.array([bool(rows[ex[i]["row"]].get("tools")) for i in o])
        pred_gw[has_tools] = common.CAT_INDEX["agentic"]
        gw = cat_metrics(cats[o], pred_gw)
        scores["cv"] = cv
        scores["cv_with_tools_structure"] = {k: gw[k] for k in ("accuracy", "macro_f1", "per_category")}
        print("confusion:", json.dumps(cv["confusion"]), "\nby source:", json.dumps(cv["by_source_accuracy"]))
        print("with tools->agentic:", gw["accuracy"], gw["macro_f1"], flush=True)
        scores["cv_router_curve"] = curve
        scores["cv_router_at_thresholds"] = at_th
        scores["tier_thresholds"] = th
        print(json.dumps({k: cv[k] for k in ("accuracy", "macro_f1")}), flush=True)
        print(json.dumps(cv["per_category"]), flush=True)
        print("router@0.45:", curve["0.45"], "\nrouter@0.5:", curve["0.5"], "\nat thresholds", th, at_th, flush=True)

    model = train_model(t0, p0, ids_list, cats, s_t, s_w, cfg, args.seed + 100)
    table = model.export_table()
    onnx_path = os.path.join(args.out, "router.onnx")
    export_onnx.build(model.p, table, onnx_path, int8=args.int8)
    if th is None:
        _, sp_all = predict(model, ids_list)
        t3 = float(np.quantile(sp_all[is_orig], 0.6))
        th = [round(t3 * 0.5, 4), round(t3, 4), round(min(0.95, t3 + 0.5 * (1 - t3)), 4)]
        scores["tier_thresholds"] = th

    # reference outputs of the numpy model (with the exported table) for eval_onnx.py
    ref_model_table = export_onnx.dequantized_table(table, args.int8)
    cp, sp = ref_predict(model, ref_model_table, ids_list[:256])
    np.savez_compressed(os.path.join(out_train, "reference_outputs.npz"), category_probs=cp, strong_prob=sp,
                        n=np.array(256))
    scores["train_seconds"] = round(time.time() - t_start, 1)
    with open(os.path.join(out_train, "scores.json"), "w") as f:
        json.dump(scores, f, indent=1)
    print(f"exported {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.2f} MB) in {scores['train_seconds']}s")


def ref_predict(model, table, ids_list):
    """Numpy forward with an explicit [V, D] table (what the ONNX graph computes)."""
    from model import LEN_SCALE, NEG
    ids, mask = common.pad(ids_list)
    p = model.p
    m = mask.astype(np.float32)
    e = table[ids]
    n = np.maximum(m.sum(1, keepdims=True), 1.0)
    mean = (e * m[:, :, None]).sum(1) / n
    mx = (e + (m[:, :, None] - 1) * NEG).max(1)
    x = np.concatenate([mean, mx, np.log(n) * LEN_SCALE], 1)
    h = np.maximum(x @ p["W1"] + p["b1"], 0)
    g = np.maximum(x @ p["W4"] + p["b4"], 0)
    return softmax(h @ p["W2"] + p["b2"]), sigmoid((g @ p["w5"] + p["b5"])[:, 0])


if __name__ == "__main__":
    main()
