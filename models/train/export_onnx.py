"""Build models/router.onnx from trained numpy weights (only ops tract-onnx supports:
Gather, Cast, Unsqueeze, Mul, Sub, Add, Div, Max, ReduceSum, ReduceMax, Log, Concat, MatMul, Relu,
Softmax, Sigmoid, Reshape, and DequantizeLinear-free int8 dequantisation via Cast+Mul).

IO contract: inputs input_ids int64 [batch, seq], attention_mask int64 [batch, seq];
outputs category_probs f32 [batch, 8], strong_prob f32 [batch].
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model import LEN_SCALE, NEG


def quantize_rows(table):
    """Symmetric per-row int8: table ~= q * scale[:, None]."""
    amax = np.abs(table).max(1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def build(params, table, path, int8=False, producer="tierflow-router-train"):
    """params: dict with W1 b1 W2 b2 W4 b4 w5 b5 (numpy); table: [V, D] float32."""
    inits = []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    nodes = []

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, **attrs))
        return outs[0]

    if int8:
        q, scale = quantize_rows(table)
        const("emb_q", q)
        const("emb_scale", scale.reshape(-1, 1))
        node("Gather", ["emb_q", "input_ids"], ["g_q"], axis=0)
        node("Cast", ["g_q"], ["g_f"], to=TensorProto.FLOAT)
        node("Gather", ["emb_scale", "input_ids"], ["g_s"], axis=0)     # B,T,1
        e = node("Mul", ["g_f", "g_s"], ["e"])
    else:
        const("emb", table.astype(np.float32))
        e = node("Gather", ["emb", "input_ids"], ["e"], axis=0)          # B,T,D

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
    node("Sub", ["m3", "one"], ["m3m1"])
    node("Mul", ["m3m1", "neg"], ["pen"])
    node("Add", [e, "pen"], ["epen"])
    node("ReduceMax", ["epen"], ["mx"], axes=[1], keepdims=0)            # B,D
    node("Log", ["n"], ["logn"])
    node("Mul", ["logn", "len_scale"], ["lf"])
    node("Concat", ["mean", "mx", "lf"], ["x"], axis=1)
    const("W1", params["W1"].astype(np.float32))
    const("b1", params["b1"].astype(np.float32))
    const("W2", params["W2"].astype(np.float32))
    const("b2", params["b2"].astype(np.float32))
    const("W4", params["W4"].astype(np.float32))
    const("b4", params["b4"].astype(np.float32))
    const("w5", params["w5"].astype(np.float32))
    const("b5", params["b5"].astype(np.float32))
    const("flat", np.array([-1], np.int64))
    node("MatMul", ["x", "W1"], ["h0"])
    node("Add", ["h0", "b1"], ["h1"])
    node("Relu", ["h1"], ["h"])
    node("MatMul", ["h", "W2"], ["l0"])
    node("Add", ["l0", "b2"], ["logits"])
    node("Softmax", ["logits"], ["category_probs"], axis=1)
    node("MatMul", ["x", "W4"], ["g0"])
    node("Add", ["g0", "b4"], ["g1"])
    node("Relu", ["g1"], ["g"])
    node("MatMul", ["g", "w5"], ["s0"])
    node("Add", ["s0", "b5"], ["s1"])
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
