#!/usr/bin/env python3
"""Run models/router.onnx with onnxruntime on the dev rows: check the IO contract, check that it
matches the numpy model (reference_outputs.npz written by train.py), and print metrics.

usage: eval_onnx.py [--data PATH] [--models DIR]
The metrics printed here are IN-SAMPLE (the shipped model is trained on all dev rows); the honest
numbers are the cross-validated ones in scores.json.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
from common import CATEGORIES, STRONG  # noqa: E402
from train import cat_metrics, router_line, tier_of  # noqa: E402


def run(sess, ids_list, batch=64):
    cps, sps = [], []
    for i in range(0, len(ids_list), batch):
        ids, mask = common.pad(ids_list[i:i + batch])
        cp, sp = sess.run(["category_probs", "strong_prob"], {"input_ids": ids, "attention_mask": mask})
        cps.append(cp)
        sps.append(sp)
    return np.concatenate(cps), np.concatenate(sps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=common.default_data_path())
    ap.add_argument("--models", default=os.path.normpath(os.path.join(HERE, "..")))
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(args.models, "router.onnx"), so, providers=["CPUExecutionProvider"])
    ins = {i.name: (i.type, i.shape) for i in sess.get_inputs()}
    outs = {o.name: (o.type, o.shape) for o in sess.get_outputs()}
    assert ins == {"input_ids": ("tensor(int64)", ["batch", "seq"]),
                   "attention_mask": ("tensor(int64)", ["batch", "seq"])}, ins
    assert outs == {"category_probs": ("tensor(float)", ["batch", 8]),
                    "strong_prob": ("tensor(float)", ["batch"])}, outs
    tok = common.load_tokenizer(os.path.join(args.models, "tokenizer.json"))
    rows = common.load_rows(args.data)
    ex = common.examples(rows)
    ids_list = common.encode(tok, [e["text"] for e in ex])
    assert max(len(x) for x in ids_list) <= common.MAX_TOKENS

    ok = True
    ref_path = os.path.join(args.models, "train", "reference_outputs.npz")
    if os.path.exists(ref_path):
        ref = np.load(ref_path)
        n = int(ref["n"])
        cp, sp = run(sess, ids_list[:n])
        dc = float(np.abs(cp - ref["category_probs"]).max())
        ds = float(np.abs(sp - ref["strong_prob"]).max())
        ok = dc < 1e-4 and ds < 1e-4
        print(f"onnx vs numpy on {n} examples: max |d category_probs| {dc:.2e}, max |d strong_prob| {ds:.2e} "
              f"-> {'MATCH' if ok else 'MISMATCH'}")
    # batch-size invariance (padding must not change results)
    one = np.concatenate([run(sess, [x])[0] for x in ids_list[:16]])
    many = run(sess, ids_list[:16], batch=16)[0]
    pad_ok = float(np.abs(one - many).max()) < 1e-5
    print(f"batch 1 vs batch 16 (padded): max diff {float(np.abs(one - many).max()):.2e} -> {'OK' if pad_ok else 'BAD'}")
    ok = ok and pad_ok

    cp, sp = run(sess, ids_list)
    o = np.array([i for i, e in enumerate(ex) if not e["aug"]])
    cats = np.array([e["cat"] for e in ex])
    met = cat_metrics(cats[o], cp[o].argmax(1))
    print("in-sample (trained on these rows):", json.dumps({k: met[k] for k in ("accuracy", "macro_f1")}))
    scores_path = os.path.join(args.models, "train", "scores.json")
    th = None
    if os.path.exists(scores_path):
        th = json.load(open(scores_path)).get("tier_thresholds")
    if th:
        mc_idx = [i for i in o if (rows[ex[i]["row"]].get("model_correct") or {}).get(STRONG) is not None]
        line = router_line([rows[ex[i]["row"]]["model_correct"] for i in mc_idx], [sp[i] >= th[1] for i in mc_idx])
        print("in-sample router line at thresholds", th, json.dumps(line))
        tiers = [tier_of(sp[i], th) for i in o]
        print("tier histogram:", {t: tiers.count(t) for t in (1, 2, 3, 4)})
    # latency indication (onnxruntime, 1 thread, model only; tract is measured on the Rust side)
    import time
    lat = []
    for x in ids_list[:400]:
        ids, mask = common.pad([x])
        t = time.perf_counter()
        sess.run(None, {"input_ids": ids, "attention_mask": mask})
        lat.append(time.perf_counter() - t)
    lat = np.sort(np.array(lat)) * 1e6
    t = time.perf_counter()
    nb = 0
    for i in range(0, min(len(ids_list), 1024), 32):
        ids, mask = common.pad(ids_list[i:i + 32])
        sess.run(None, {"input_ids": ids, "attention_mask": mask})
        nb += len(ids)
    rate = nb / (time.perf_counter() - t)
    print(f"onnxruntime 1 thread: batch 1 p50 {lat[len(lat) // 2]:.0f} us p99 {lat[int(len(lat) * 0.99)]:.0f} us; "
          f"batch 32: {rate:.0f} prompts/s (model only)")
    print("transcription prob max:", float(cp[:, CATEGORIES.index("transcription")].max()))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
