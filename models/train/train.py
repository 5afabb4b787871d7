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
import strong  # noqa: E402

CFG = dict(s_mode="weak_fails", dim=64, hidden=256, epochs=16, batch=32, lr=3e-3, wd=1e-4, drop=0.3,
           tok_drop=0.2, smooth=0.1, warmup=100, cw_pow=0.5, bigram=1, buckets=1 << 16, use_max=1, emb_wd=0.0,
           t_lambda=0.0, t_scale=4.0, s_rows="all", s_inter=1, s_l2=0.01, s_frac=0.48, swa=0.0)


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


def train_model(t0, p0, ids_list, cats, cfg, seed, temb=None):
    model = RouterModel(t0, p0, hidden=cfg["hidden"], seed=seed, buckets=cfg["buckets"], bigram=bool(cfg["bigram"]),
                        use_max=bool(cfg["use_max"]), t_dim=temb.shape[1] if (temb is not None and cfg["t_lambda"] > 0) else 0)
    rng = np.random.default_rng(seed + 1)
    n = len(ids_list)
    cnt = np.bincount(cats, minlength=len(CATEGORIES)).astype(np.float64)
    cw = np.where(cnt > 0, (cnt.sum() / (len(CATEGORIES) * np.maximum(cnt, 1))) ** cfg["cw_pow"], 0.0)
    cw = (cw / (cw[cats].mean())).astype(np.float32)
    opt = Adam(model.p, lr=cfg["lr"], wd=cfg["wd"], sparse=RouterModel.sparse_params)
    steps_per_epoch = (n + cfg["batch"] - 1) // cfg["batch"]
    total = steps_per_epoch * cfg["epochs"]
    step = 0
    k = len(CATEGORIES)
    swa, n_swa = None, 0
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
            logits, aux, cache = model.forward(ids, mask, train=True, drop=cfg["drop"])
            y = np.full((len(idx), k), cfg["smooth"] / (k - 1), np.float32)
            y[np.arange(len(idx)), cats[idx]] = 1 - cfg["smooth"]
            w = cw[cats[idx]][:, None]
            B = len(idx)
            dlogits = (softmax(logits) - y) * w / B
            daux = None
            if aux is not None:
                daux = (cfg["t_lambda"] * 2.0 / B) * (aux - temb[idx] * cfg["t_scale"])
                daux = daux.astype(np.float32)
            grads = model.backward(dlogits.astype(np.float32), daux, cache, emb_wd=cfg["emb_wd"])
            if step < cfg["warmup"]:
                lr = cfg["lr"] * (step + 1) / cfg["warmup"]
            else:
                lr = cfg["lr"] * 0.5 * (1 + np.cos(np.pi * (step - cfg["warmup"]) / max(1, total - cfg["warmup"])))
            opt.step(model.p, grads, lr=lr)
            step += 1
        if cfg["swa"] > 0 and ep >= int(cfg["epochs"] * (1 - cfg["swa"])):
            # stochastic weight averaging over the end-of-epoch weights of the last `swa` fraction
            if swa is None:
                swa, n_swa = {k: v.astype(np.float64) for k, v in model.p.items()}, 1
            else:
                n_swa += 1
                for k2, v in model.p.items():
                    swa[k2] += (v - swa[k2]) / n_swa
    if swa is not None:
        model.p = {k: v.astype(np.float32) for k, v in swa.items()}
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
def strong_rows(ex, rows, which):
    """Examples the strong head is fitted on: "mc" GPT-4/Mixtral rows only, "outcome" every row with
    per-model outcomes (adds MT-Bench and LLMRouter), "all" also the tier_hint priors."""
    out = []
    for i, e in enumerate(ex):
        mc = (rows[e["row"]].get("model_correct") or {}).get(STRONG) is not None
        if which == "all" or (which == "outcome" and e["has"]) or (which == "mc" and mc):
            out.append(i)
    return np.array(out)


def fit_strong_head(logn, probs, s_t, s_w, idx, cfg):
    mu, sd = float(logn[idx].mean()), float(logn[idx].std())
    F = strong.features(logn[idx], probs[idx], mu, sd, inter=bool(cfg["s_inter"]))
    coef, b = strong.fit(F, s_t[idx], s_w[idx], l2=cfg["s_l2"])
    if not cfg["s_inter"]:
        coef = np.concatenate([coef, np.zeros(probs.shape[1])])   # graph always has the 17 inputs
    return dict(coef=[float(c) for c in coef], b=float(b), mu=mu, sd=sd)


def strong_predict(head, logn, probs, inter=True):
    return strong.predict(strong.features(logn, probs, head["mu"], head["sd"], inter=True),
                          np.array(head["coef"]), head["b"])


def thresholds_for(sp_mc, sp_all, frac):
    """t2 (tier >= 3, strong model) = quantile sending `frac` of the GPT-4/Mixtral rows to the strong
    model; t1 = 30th percentile over all requests (tier 1: the cheapest 30%); t3 = the quantile sending
    the top third of the strong calls on GPT-4/Mixtral rows to tier 4."""
    t2 = float(np.quantile(sp_mc, 1 - frac))
    t1 = min(float(np.quantile(sp_all, 0.30)), 0.9 * t2)
    t3 = max(float(np.quantile(sp_mc, 1 - frac / 3)), t2 + 1e-3)
    return [round(t1, 4), round(t2, 4), round(t3, 4)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=common.default_data_path())
    ap.add_argument("--out", default=os.path.normpath(os.path.join(HERE, "..")))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-cv", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--int8", action="store_true", help="int8 per-row quantised embedding tables")
    ap.add_argument("--set", action="append", default=[], help="override CFG key=value")
    ap.add_argument("--save-oof", default="", help="write out-of-fold predictions to this .npz")
    args = ap.parse_args()
    cfg = dict(CFG)
    for kv in args.set:
        k, v = kv.split("=")
        cfg[k] = type(CFG[k])(float(v)) if isinstance(CFG[k], (int, float)) else v
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
    s_t = np.array([e["s_t"] for e in ex], np.float64)
    s_w = np.array([e["s_w"] for e in ex], np.float64)
    logn = np.log(np.array([max(1, len(x)) for x in ids_list], np.float64))
    groups = [e["group"] for e in ex]
    is_orig = np.array([not e["aug"] for e in ex])
    print(f"{len(rows)} rows, {len(ex)} examples, cfg {cfg}", flush=True)

    t0 = teacher_table()
    p0 = pca_init(t0, cfg["dim"])
    temb = None
    if cfg["t_lambda"] > 0:
        import teacher
        temb = teacher.embed(ids_list)
        print(f"teacher embeddings ({time.time() - t_start:.0f}s)", flush=True)
    scores = dict(config=cfg, seed=args.seed, data=os.path.basename(args.data), rows=len(rows))
    s_idx = strong_rows(ex, rows, cfg["s_rows"])

    head = None
    th = None
    if not args.no_cv:
        folds = make_folds(groups, list(cats), args.folds, args.seed)
        oof_c = np.zeros((len(ex), len(CATEGORIES)), np.float64)
        for f in range(args.folds):
            tr = np.where(folds != f)[0]
            va = np.where(folds == f)[0]
            m = train_model(t0, p0, [ids_list[i] for i in tr], cats[tr], cfg, args.seed + f,
                            temb=None if temb is None else temb[tr])
            cp, _ = predict(m, [ids_list[i] for i in va])
            oof_c[va] = cp
            acc = (cp.argmax(1) == cats[va])[is_orig[va]].mean()
            print(f"fold {f}: {len(va)} val, acc {acc:.4f} ({time.time() - t_start:.0f}s)", flush=True)
        o = np.where(is_orig)[0]
        cv = cat_metrics(cats[o], oof_c[o].argmax(1))
        by_src = {}
        for i in o:
            s = rows[ex[i]["row"]]["source"]
            by_src.setdefault(s, []).append(oof_c[i].argmax() == cats[i])
        cv["by_source_accuracy"] = {s: round(float(np.mean(v)), 4) for s, v in sorted(by_src.items())}
        # strong head, nested: fitted on the out-of-fold category probabilities of the other folds
        oof_s = np.zeros(len(ex))
        for f in range(args.folds):
            tr = s_idx[folds[s_idx] != f]
            va = np.where(folds == f)[0]
            hd = fit_strong_head(logn, oof_c, s_t, s_w, tr, cfg)
            oof_s[va] = strong_predict(hd, logn[va], oof_c[va], bool(cfg["s_inter"]))
        mc_idx = [i for i in o if (rows[ex[i]["row"]].get("model_correct") or {}).get(STRONG) is not None]
        mc_list = [rows[ex[i]["row"]]["model_correct"] for i in mc_idx]
        sp_mc = oof_s[mc_idx]
        curve = router_curve(mc_list, sp_mc)
        lens_curve = router_curve(mc_list, logn[mc_idx] + 1e-6 * np.arange(len(mc_idx)))
        th = thresholds_for(sp_mc, oof_s[o], cfg["s_frac"])
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
        scores["cv_router_curve_length_only"] = {k: v["quality_vs_strong"] for k, v in lens_curve.items()}
        scores["cv_router_at_thresholds"] = at_th
        scores["tier_thresholds"] = th
        print(json.dumps({k: cv[k] for k in ("accuracy", "macro_f1")}), flush=True)
        print(json.dumps(cv["per_category"]), flush=True)
        print("router (oof):", {k: v["quality_vs_strong"] for k, v in curve.items()},
              "\nlength only:", scores["cv_router_curve_length_only"],
              "\nat thresholds", th, at_th, flush=True)
        # diagnostics: the router line of other strong-head fitting choices (not used for the export)
        alt = {}
        for which in ("mc", "outcome", "all"):
            for inter in (0, 1):
                ci = dict(cfg, s_rows=which, s_inter=inter)
                si = strong_rows(ex, rows, which)
                oo = np.zeros(len(ex))
                for f in range(args.folds):
                    hd = fit_strong_head(logn, oof_c, s_t, s_w, si[folds[si] != f], ci)
                    va = np.where(folds == f)[0]
                    oo[va] = strong_predict(hd, logn[va], oof_c[va])
                c = router_curve(mc_list, oo[mc_idx])
                alt[f"{which}_inter{inter}"] = {k: c[k]["quality_vs_strong"] for k in ("0.4", "0.45", "0.5")}
        scores["cv_router_strong_head_variants"] = alt
        print("strong head variants:", json.dumps(alt), flush=True)
        if args.save_oof:
            np.savez_compressed(args.save_oof, category_probs=oof_c, strong_prob=oof_s, folds=folds)
        # final strong head: fitted on all out-of-fold probabilities (as sharp as on unseen prompts)
        head = fit_strong_head(logn, oof_c, s_t, s_w, s_idx, cfg)

    model = train_model(t0, p0, ids_list, cats, cfg, args.seed + 100, temb=temb)
    cp_in, _ = predict(model, ids_list)
    if head is None:
        head = fit_strong_head(logn, cp_in, s_t, s_w, s_idx, cfg)
        mc_idx = [i for i in np.where(is_orig)[0] if (rows[ex[i]["row"]].get("model_correct") or {}).get(STRONG) is not None]
        sp_in = strong_predict(head, logn, cp_in)
        th = thresholds_for(sp_in[mc_idx], sp_in[is_orig], cfg["s_frac"])
        scores["tier_thresholds"] = th
    scores["strong_head"] = head
    table = model.export_table()
    btable = model.p.get("B")
    onnx_path = os.path.join(args.out, "router.onnx")
    export_onnx.build(model.p, table, onnx_path, int8=args.int8, bigram_table=btable, buckets=cfg["buckets"],
                      use_max=bool(cfg["use_max"]), strong=head)

    # reference outputs of the numpy model (with the exported, dequantised tables) for eval_onnx.py
    dq = export_onnx.dequantized_table(table, args.int8)
    dqb = None if btable is None else export_onnx.dequantized_table(btable, args.int8)
    cp, sp = ref_predict(model, dq, dqb, head, ids_list[:256])
    np.savez_compressed(os.path.join(out_train, "reference_outputs.npz"), category_probs=cp, strong_prob=sp,
                        n=np.array(256))
    scores["train_seconds"] = round(time.time() - t_start, 1)
    with open(os.path.join(out_train, "scores.json"), "w") as f:
        json.dump(scores, f, indent=1)
    print(f"exported {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.2f} MB) in {scores['train_seconds']}s")


def ref_predict(model, table, btable, head, ids_list):
    """Numpy forward with explicit [V, D] (and bigram) tables: what the ONNX graph computes."""
    from model import LEN_SCALE, NEG, bigram_hash
    ids, mask = common.pad(ids_list)
    p = model.p
    m = mask.astype(np.float32)
    e = table[ids]
    n = np.maximum(m.sum(1, keepdims=True), 1.0)
    feats = [(e * m[:, :, None]).sum(1) / n]
    if model.use_max:
        feats.append((e + (m[:, :, None] - 1) * NEG).max(1))
    if btable is not None:
        mb = m[:, :-1] * m[:, 1:]
        eb = btable[bigram_hash(ids, model.buckets)]
        feats.append((eb * mb[:, :, None]).sum(1) / np.maximum(mb.sum(1, keepdims=True), 1.0))
    feats.append(np.log(n) * LEN_SCALE)
    x = np.concatenate(feats, 1)
    h = np.maximum(x @ p["W1"] + p["b1"], 0)
    cp = softmax(h @ p["W2"] + p["b2"])
    inter = len(head["coef"]) == 17
    sp = strong_predict(head, np.log(n[:, 0]).astype(np.float64), cp.astype(np.float64), inter)
    return cp, sp.astype(np.float32)


if __name__ == "__main__":
    main()
