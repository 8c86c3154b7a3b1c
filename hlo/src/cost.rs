//! What a program costs before it runs: the floating-point work of its dots.
//!
//! On every machine the dots are most of a transformer's work, and their count is fixed
//! by the model and the batch (not by how well they are scheduled), so dividing it by a
//! measured time gives the rate the program reached: how far it is from the machine's
//! peak, and what the fastest possible step is at that peak.

use crate::ir::{Function, Op};

/// The dots of a function that contribute to its outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DotWork {
    /// Floating-point operations: a multiply and an add per term of every product.
    pub flops: f64,
    /// How many `dot_general` nodes were counted.
    pub dots: usize,
    /// Dots inside `while` bodies, not counted in `flops`: a loop's trip count is known
    /// only when it runs.
    pub dots_in_loops: usize,
}

/// Counts the live dots of `f` (the ones its outputs depend on), outside loops.
pub fn dot_work(f: &Function) -> DotWork {
    let live = f.live_nodes();
    let mut work = DotWork::default();
    for (node, _) in f.nodes.iter().zip(&live).filter(|(_, &l)| l) {
        match &node.op {
            Op::DotGeneral { dims } => {
                let lhs = f.value_shape(node.operands[0]);
                let terms: i64 = dims
                    .lhs_contracting
                    .iter()
                    .map(|&d| lhs.dims[d as usize])
                    .product();
                let outputs: i64 = node.outputs[0].dims.iter().product();
                work.flops += 2.0 * outputs as f64 * terms as f64;
                work.dots += 1;
            }
            Op::While { cond, body } => {
                work.dots_in_loops += count_dots(cond) + count_dots(body);
            }
            // Counted as its decomposition, whichever kernel runs it.
            Op::Composite { decomposition, .. } => {
                let inner = dot_work(decomposition);
                work.flops += inner.flops;
                work.dots += inner.dots;
                work.dots_in_loops += inner.dots_in_loops;
            }
            _ => {}
        }
    }
    work
}

/// Every dot of `f` and of the loops inside it, counted once.
fn count_dots(f: &Function) -> usize {
    f.nodes
        .iter()
        .map(|n| match &n.op {
            Op::DotGeneral { .. } => 1,
            Op::While { cond, body } => count_dots(cond) + count_dots(body),
            Op::Composite { decomposition, .. } => count_dots(decomposition),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Builder, DType, Shape};

    #[test]
    fn a_matrix_product_costs_two_flops_per_term() {
        let b = Builder::new("mm");
        let x = b.parameter("x", Shape::new(DType::F32, vec![3, 5]));
        let w = b.parameter("w", Shape::new(DType::F32, vec![5, 7]));
        let y = x.matmul(&w);
        let f = b.build(&[&y]).unwrap();
        let work = dot_work(&f);
        assert_eq!(work.dots, 1);
        assert_eq!(work.flops, 2.0 * 3.0 * 7.0 * 5.0);
        assert_eq!(work.dots_in_loops, 0);
    }

    #[test]
    fn batched_dots_count_every_batch_and_dead_dots_count_nothing() {
        let b = Builder::new("bmm");
        let x = b.parameter("x", Shape::new(DType::F32, vec![4, 2, 8]));
        let y = b.parameter("y", Shape::new(DType::F32, vec![4, 8, 6]));
        let used = x.matmul(&y);
        let _unused = y.transpose(&[0, 2, 1]).matmul(&x.transpose(&[0, 2, 1]));
        let f = b.build(&[&used]).unwrap();
        let work = dot_work(&f);
        assert_eq!(work.dots, 1);
        assert_eq!(work.flops, 2.0 * 4.0 * 2.0 * 6.0 * 8.0);
    }
}
