#!/usr/bin/env python3
"""Fill models/README.md from README.template.md, scores.json and the shipped files' sha256."""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.normpath(os.path.join(HERE, ".."))


def main():
    runtime = sys.argv[1] if len(sys.argv) > 1 else "see scores.json train_seconds"
    s = json.load(open(os.path.join(HERE, "scores.json")))
    rows, total = [], 0
    for name in ("router.onnx", "tokenizer.json"):
        p = os.path.join(MODELS, name)
        data = open(p, "rb").read()
        total += len(data)
        rows.append(f"| `{name}` | {len(data)} | `{hashlib.sha256(data).hexdigest()}` |")
    cv = s["cv"]
    lines = [f"- category accuracy **{cv['accuracy']:.4f}**, macro-F1 **{cv['macro_f1']:.4f}** "
             f"(model text only, all {sum(v['support'] for v in cv['per_category'].values())} rows)",
             f"- with the gateway's structure rule (rows carrying `tools` → agentic): accuracy "
             f"{s['cv_with_tools_structure']['accuracy']:.4f}, macro-F1 {s['cv_with_tools_structure']['macro_f1']:.4f}",
             "", "| category | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c, m in cv["per_category"].items():
        lines.append(f"| {c} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |")
    lines += ["", "Accuracy by source: " + ", ".join(f"{k} {v:.3f}" for k, v in cv["by_source_accuracy"].items()),
              "", "Most frequent confusions (gold->pred): " + ", ".join(
                  f"{k} {v}" for k, v in list(cv["confusion"].items())[:8]),
              "", "Router line (score.py formula, out-of-fold strong_prob, 745 GPT-4/Mixtral rows; "
              "weak-only 0.786 of strong quality; last column: ranking by prompt length alone):", "",
              "| strong calls | quality | of strong quality | PGR | length only |", "|---|---|---|---|---|"]
    lo = s.get("cv_router_curve_length_only", {})
    for frac, r in s["cv_router_curve"].items():
        lines.append(f"| {float(frac):.2f} | {r['quality']:.4f} | {r['quality_vs_strong']:.4f} | {r['pgr']:.3f} "
                     f"| {lo.get(frac, float('nan')):.4f} |")
    a = s["cv_router_at_thresholds"]
    lines += ["", f"At the recommended thresholds: {a['strong_call_fraction']:.3f} strong calls, "
              f"{a['quality_vs_strong']:.4f} of strong quality (PGR {a['pgr']:.3f}). "
              f"tier_hint agreement: exact {cv['tier_hint_exact']:.3f}, within 1 {cv['tier_hint_within_1']:.3f}."]
    th = s["tier_thresholds"]
    t = open(os.path.join(HERE, "README.template.md")).read()
    t = (t.replace("@SHA_TABLE@", "\n".join(rows)).replace("@TOTAL@", f"{total / 1e6:.2f} MB")
         .replace("@T1@", str(th[0])).replace("@T2@", str(th[1])).replace("@T3@", str(th[2]))
         .replace("@RUNTIME@", runtime).replace("@SCORES@", "\n".join(lines)))
    open(os.path.join(MODELS, "README.md"), "w").write(t)


if __name__ == "__main__":
    main()
