"""Build models/router.onnx from trained numpy weights (only simple ops tract-onnx supports:
Gather, Cast, Unsqueeze, Slice, Mul, Sub, Add, Div, Mod, Max, ReduceSum, ReduceMax, Log, Concat, MatMul,
Relu, Softmax, Sigmoid, Reshape; int8 tables are dequantised with Cast+Mul, no DequantizeLinear).

IO contract: inputs input_ids int64 [batch, seq], attention_mask int64 [batch, seq];
outputs category_probs f32 [batch, 8], strong_prob f32 [batch].
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model import BIGRAM_MUL, LEN_SCALE, NEG


def quantize_rows(table):
    """Symmetric per-row int8: table ~= q * scale[:, None]."""
    amax = np.abs(table).max(1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def build(params, table, path, int8=False, producer="tierflow-router-train", bigram_table=None, buckets=0,
          use_max=True, strong=None):
    """params: dict with W1 b1 W2 b2 (numpy); table: [V, D] float32; bigram_table: [buckets, D] or None;
    strong: dict(coef [17], b, mu, sd) of the strong head (strong.py)."""
    inits = []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    nodes = []

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, **attrs))
        return outs[0]

    def lookup(tab, idx, pfx):
        if int8:
            q, scale = quantize_rows(tab)
            const(pfx + "_q", q)
            const(pfx + "_scale", scale.reshape(-1, 1))
            node("Gather", [pfx + "_q", idx], [pfx + "_gq"], axis=0)
            node("Cast", [pfx + "_gq"], [pfx + "_gf"], to=TensorProto.FLOAT)
            node("Gather", [pfx + "_scale", idx], [pfx + "_gs"], axis=0)    # B,T,1
            return node("Mul", [pfx + "_gf", pfx + "_gs"], [pfx + "_e"])
        const(pfx, tab.astype(np.float32))
        return node("Gather", [pfx, idx], [pfx + "_e"], axis=0)             # B,T,D

    e = lookup(table, "input_ids", "emb")

    const("ax1", np.array([1], np.int64))
    const("ax2", np.array([2], np.int64))
    const("one", np.array(1.0, np.float32))
    const("neg", np.array(NEG, np.float32))
    const("len_scale", np.array(LEN_SCALE, np.float32))
    node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT)       # B,T
    node("Unsqueeze", ["mf", "ax2"], ["m3"])                             # B,T,1
    node("Mul", [e, "m3"], ["em"])
    node("ReduceSum", ["em", "ax1"], ["s"], keepdims=0)                  # B,D
    node("ReduceSum", ["mf", "ax1"], ["n0"], keepdims=1)                 # B,1
    node("Max", ["n0", "one"], ["n"])
    node("Div", ["s", "n"], ["mean"])
    feats = ["mean"]
    if use_max:
        node("Sub", ["m3", "one"], ["m3m1"])
        node("Mul", ["m3m1", "neg"], ["pen"])
        node("Add", [e, "pen"], ["epen"])
        node("ReduceMax", ["epen"], ["mx"], axes=[1], keepdims=0)        # B,D
        feats.append("mx")
    if bigram_table is not None:
        # hashed token bigrams: h_t = (ids[t] * MUL + ids[t+1]) mod BUCKETS, masked mean of B[h_t]
        const("sl0", np.array([0], np.int64))
        const("sl1", np.array([1], np.int64))
        const("slm1", np.array([-1], np.int64))
        const("slbig", np.array([np.iinfo(np.int64).max], np.int64))   # "to the end" (ONNX idiom; tract-safe)
        const("bmul", np.array(BIGRAM_MUL, np.int64))
        const("bmod", np.array(buckets, np.int64))
        node("Slice", ["input_ids", "sl0", "slm1", "sl1"], ["ids_a"])       # B,T-1
        node("Slice", ["input_ids", "sl1", "slbig", "sl1"], ["ids_b"])      # B,T-1
        node("Mul", ["ids_a", "bmul"], ["ids_am"])
        node("Add", ["ids_am", "ids_b"], ["ids_ab"])
        node("Mod", ["ids_ab", "bmod"], ["bh"], fmod=0)
        node("Slice", ["mf", "sl0", "slm1", "sl1"], ["mf_a"])
        node("Slice", ["mf", "sl1", "slbig", "sl1"], ["mf_b"])
        node("Mul", ["mf_a", "mf_b"], ["mbf"])                           # B,T-1
        node("Unsqueeze", ["mbf", "ax2"], ["mb3"])
        if int8:
            # fold the bigram mask into the gathered per-row scale: one [B,T,D] Mul instead of two
            bq, bscale = quantize_rows(bigram_table)
            const("bemb_q", bq)
            const("bemb_scale", bscale.reshape(-1, 1))
            node("Gather", ["bemb_q", "bh"], ["bemb_gq"], axis=0)
            node("Cast", ["bemb_gq"], ["bemb_gf"], to=TensorProto.FLOAT)
            node("Gather", ["bemb_scale", "bh"], ["bemb_gs"], axis=0)     # B,T-1,1
            node("Mul", ["bemb_gs", "mb3"], ["bemb_w"])
            node("Mul", ["bemb_gf", "bemb_w"], ["ebm"])
        else:
            eb = lookup(bigram_table, "bh", "bemb")
            node("Mul", [eb, "mb3"], ["ebm"])
        node("ReduceSum", ["ebm", "ax1"], ["bs"], keepdims=0)
        node("ReduceSum", ["mbf", "ax1"], ["nb0"], keepdims=1)
        node("Max", ["nb0", "one"], ["nb"])
        node("Div", ["bs", "nb"], ["bmean"])
        feats.append("bmean")
    node("Log", ["n"], ["logn"])
    node("Mul", ["logn", "len_scale"], ["lf"])
    node("Concat", feats + ["lf"], ["x"], axis=1)
    const("W1", params["W1"].astype(np.float32))
    const("b1", params["b1"].astype(np.float32))
    const("W2", params["W2"].astype(np.float32))
    const("b2", params["b2"].astype(np.float32))
    const("flat", np.array([-1], np.int64))
    node("MatMul", ["x", "W1"], ["h0"])
    node("Add", ["h0", "b1"], ["h1"])
    node("Relu", ["h1"], ["h"])
    node("MatMul", ["h", "W2"], ["l0"])
    node("Add", ["l0", "b2"], ["logits"])
    node("Softmax", ["logits"], ["category_probs"], axis=1)
    # strong head: sigmoid([lz, probs, lz * probs] @ ws + bs), lz = (log n - mu) / sd
    const("s_mu", np.array(strong["mu"], np.float32))
    const("s_sd", np.array(strong["sd"], np.float32))
    const("ws", np.asarray(strong["coef"], np.float32).reshape(-1, 1))
    const("s_b", np.array([strong["b"]], np.float32))
    node("Sub", ["logn", "s_mu"], ["lz0"])
    node("Div", ["lz0", "s_sd"], ["lz"])                                 # B,1
    node("Mul", ["category_probs", "lz"], ["lzp"])                       # B,8
    node("Concat", ["lz", "category_probs", "lzp"], ["sf"], axis=1)      # B,17
    node("MatMul", ["sf", "ws"], ["s0"])
    node("Add", ["s0", "s_b"], ["s1"])
    node("Sigmoid", ["s1"], ["s2"])
    node("Reshape", ["s2", "flat"], ["strong_prob"])

    graph = helper.make_graph(
        nodes, "tierflow_router",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("category_probs", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("strong_prob", TensorProto.FLOAT, ["batch"])],
        initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name=producer)
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def dequantized_table(table, int8):
    if not int8:
        return table.astype(np.float32)
    q, scale = quantize_rows(table)
    return q.astype(np.float32) * scale[:, None]
