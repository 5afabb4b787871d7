//! A fast f32 `ReduceMax` over one axis for the router model's max-pooling over the sequence.
//!
//! tract 0.23 evaluates `Reduce<Max>` through its generic path: one `ndarray` slice per output
//! element (2,048 of them for a batch of 32 × 64 dims), which took ~35% of a batch-32 inference on
//! the shipped model, more than the rest of the pooling and both matrix products together
//! (`perf` on `cargo bench --bench classifier`). `SeqMax` computes the same thing as one pass of
//! contiguous row maxima and replaces every f32 single-axis `Reduce<Max>` when a model loads
//! (`replace_reduce_max`), before tract optimises it. Results are bit-identical to tract's: the
//! same fold from `f32::MIN` with the same comparison (a NaN wins, as there).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

/// Maximum over `axis`, kept as a dimension of 1 (ONNX `keepdims = 1`, as tract's `Reduce`).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct SeqMax {
    pub axis: usize,
}

impl Op for SeqMax {
    fn name(&self) -> StaticName {
        "TierflowSeqMax".into()
    }

    op_as_typed_op!();
}

impl EvalOp for SeqMax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        ensure!(
            self.axis < shape.len(),
            "axis {} of rank {}",
            self.axis,
            shape.len()
        );
        let outer: usize = shape[..self.axis].iter().product();
        let n = shape[self.axis];
        let inner: usize = shape[self.axis + 1..].iter().product();
        let mut out_shape: TVec<usize> = shape.into();
        out_shape[self.axis] = 1;
        let plain = input.try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        let mut out = vec![f32::MIN; outer * inner];
        max_rows(x, &mut out, outer, n, inner);
        Ok(tvec!(tract_ndarray::ArrayD::from_shape_vec(
            &*out_shape,
            out
        )?
        .into_tensor()
        .into_tvalue()))
    }
}

/// `out[o][i] = fold(f32::MIN, x[o][k][i] for k in 0..n)` with `acc > v ? acc : v`.
fn max_rows(x: &[f32], out: &mut [f32], outer: usize, n: usize, inner: usize) {
    for o in 0..outer {
        let dst = &mut out[o * inner..(o + 1) * inner];
        for k in 0..n {
            let row = &x[(o * n + k) * inner..(o * n + k + 1) * inner];
            for (acc, &v) in dst.iter_mut().zip(row) {
                *acc = if *acc > v { *acc } else { v };
            }
        }
    }
}

impl TypedOp for SeqMax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        let mut shape: TVec<TDim> = inputs[0].shape.to_tvec();
        ensure!(self.axis < shape.len());
        shape[self.axis] = 1.to_dim();
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

/// Replaces each f32 `Reduce<Max>` over a single axis of `model` by `SeqMax`. Returns how many.
pub fn replace_reduce_max(model: &mut TypedModel) -> TractResult<usize> {
    let mut targets = Vec::new();
    for node in model.nodes() {
        let Some(r) = node.op_as::<Reduce>() else {
            continue;
        };
        if r.reducer != Reducer::Max || r.axes.len() != 1 || node.inputs.len() != 1 {
            continue;
        }
        if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            continue;
        }
        targets.push((node.id, r.axes[0]));
    }
    for &(id, axis) in &targets {
        let node = model.node(id);
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, SeqMax { axis })?;
        patch.apply(model)?;
    }
    Ok(targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    fn reduce_both(shape: &[usize], axis: usize, seed: u32) -> (Tensor, Tensor) {
        let len: usize = shape.iter().product();
        // A small LCG: reproducible values with repeats, negatives and the -1e4 mask penalty.
        let mut s = seed;
        let data: Vec<f32> = (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                match s >> 29 {
                    0 => -1e4,
                    1 => 0.0,
                    _ => ((s >> 8) as f32 / (1u32 << 24) as f32) * 8.0 - 4.0,
                }
            })
            .collect();
        let t = tract_ndarray::ArrayD::from_shape_vec(shape, data)
            .expect("shape")
            .into_tensor();
        let want = Reducer::Max.reduce(&[axis], &t).expect("tract reduce");
        let got = SeqMax { axis }
            .eval(&EvalContext::out_of_plan(), tvec!(t.into_tvalue()))
            .expect("eval")
            .remove(0)
            .into_tensor();
        (want, got)
    }

    #[test]
    fn equals_tracts_reduce_max_on_every_axis_and_shape() {
        let shapes: [&[usize]; 6] = [
            &[1, 16, 64],
            &[32, 128, 64],
            &[3, 1, 5],
            &[2, 7],
            &[9],
            &[2, 3, 4, 5],
        ];
        for (i, shape) in shapes.iter().enumerate() {
            for axis in 0..shape.len() {
                let (want, got) = reduce_both(shape, axis, i as u32 * 31 + axis as u32);
                assert_eq!(want.shape(), got.shape(), "{shape:?} axis {axis}");
                assert_eq!(f32s(&want), f32s(&got), "{shape:?} axis {axis}");
            }
        }
        // An empty axis gives f32::MIN, as tract's fold does.
        let (want, got) = reduce_both(&[2, 0, 3], 1, 7);
        assert_eq!(f32s(&want), f32s(&got));
    }
}
