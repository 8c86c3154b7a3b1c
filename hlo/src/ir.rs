//! The intermediate representation: a function is a list of nodes in topological order.
//!
//! Each node is one primitive (`Op`) applied to earlier nodes' outputs. Most primitives
//! have one output; a few (rng_bit_generator, sort, while) have several, so a value is named by
//! its node and output index ([`ValueRef`]). The op set mirrors StableHLO closely so that
//! emission is a direct translation and each op has one VJP rule.

use crate::dtype::DType;
use crate::literal::Literal;
use crate::shape::Shape;
use crate::sharding::{Mesh, PartitionSpec};

/// Index of a node in its graph.
pub type NodeId = usize;

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    pub node: NodeId,
    pub output: usize,
}

/// Elementwise one-operand primitives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Log1p,
    Tanh,
    Logistic,
    Sqrt,
    Rsqrt,
    Sign,
    Floor,
    Cos,
    Sin,
    /// Logical/bitwise not (pred and integers).
    Not,
}

/// Elementwise two-operand primitives (operands of equal shape and dtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    Rem,
    /// Logical/bitwise (pred and integers).
    And,
    Or,
    Xor,
    ShiftLeft,
    ShiftRightLogical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareDirection {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The monoid of a reduction; emission supplies the init value and the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
    And,
    Or,
}

/// Dimension numbers of `dot_general`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct DotDims {
    pub lhs_batch: Vec<i64>,
    pub rhs_batch: Vec<i64>,
    pub lhs_contracting: Vec<i64>,
    pub rhs_contracting: Vec<i64>,
}

/// Dimension numbers of `gather` (StableHLO semantics, without batching dims).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GatherDims {
    pub offset_dims: Vec<i64>,
    pub collapsed_slice_dims: Vec<i64>,
    pub start_index_map: Vec<i64>,
    pub index_vector_dim: i64,
    pub slice_sizes: Vec<i64>,
}

/// Dimension numbers of `scatter` (StableHLO semantics, without batching dims).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScatterDims {
    pub update_window_dims: Vec<i64>,
    pub inserted_window_dims: Vec<i64>,
    pub scatter_dims_to_operand_dims: Vec<i64>,
    pub index_vector_dim: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RngAlgorithm {
    ThreeFry,
    Philox,
}

/// A primitive operation. Operands are stored in the [`Node`], attributes here.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The `index`-th function argument.
    Parameter {
        index: usize,
    },
    Constant(Literal),
    /// Counts 0, 1, 2, ... along `dim` of `shape`.
    Iota {
        shape: Shape,
        dim: i64,
    },
    Convert {
        to: DType,
    },
    /// Bit-level reinterpretation to an element type of the same width.
    BitcastConvert {
        to: DType,
    },
    /// Operand dimension i becomes result dimension `dims[i]` (size 1 or equal).
    BroadcastInDim {
        shape: Vec<i64>,
        dims: Vec<i64>,
    },
    Reshape {
        dims: Vec<i64>,
    },
    Transpose {
        perm: Vec<i64>,
    },
    Slice {
        start: Vec<i64>,
        limit: Vec<i64>,
        strides: Vec<i64>,
    },
    /// Operands: tensor, then one scalar integer start index per dimension.
    DynamicSlice {
        sizes: Vec<i64>,
    },
    /// Operands: tensor, update, then one scalar integer start index per dimension.
    DynamicUpdateSlice,
    Concatenate {
        dim: i64,
    },
    /// Operands: tensor, scalar padding value. Negative low/high trim.
    Pad {
        low: Vec<i64>,
        high: Vec<i64>,
        interior: Vec<i64>,
    },
    /// Operands: pred (same shape or scalar), on_true, on_false.
    Select,
    Compare {
        direction: CompareDirection,
    },
    /// Operands: min, x, max (min/max scalar or same shape as x).
    Clamp,
    Unary(UnaryOp),
    Binary(BinaryOp),
    DotGeneral {
        dims: DotDims,
    },
    Reduce {
        kind: ReduceKind,
        dims: Vec<i64>,
    },
    /// Operands: table, integer indices.
    Gather {
        dims: GatherDims,
    },
    /// Operands: tensor, integer indices, updates. Adds updates into a copy of tensor.
    ScatterAdd {
        dims: ScatterDims,
    },
    /// Operand: `u64[2]` state. Outputs: new state, random bits of `shape` (u32 or u64).
    RngBitGenerator {
        algorithm: RngAlgorithm,
        shape: Shape,
    },
    /// Stable sort of all operands along `dim`, keyed by the first one. One output per operand.
    Sort {
        dim: i64,
        descending: bool,
    },
    /// Pins the sharding of an intermediate value.
    ShardingConstraint {
        spec: PartitionSpec,
    },
    /// Identity that autodiff treats as a constant (no gradient flows through).
    StopGradient,
    /// StableHLO `while`: operands are the initial loop-carried values, outputs their
    /// values once `cond` (carried values -> `pred[]`) is false; each iteration replaces
    /// them by `body`'s outputs (same types, same order). Both functions take exactly the
    /// carried values as parameters and see nothing else, so a value from outside the
    /// loop enters it as a carried value that the body passes through unchanged (what
    /// [`crate::Builder::while_loop`]'s `captured` does).
    While {
        cond: Box<Function>,
        body: Box<Function>,
    },
    /// A named computation with its meaning given by `decomposition` (a function of the
    /// operands, returning the outputs), as StableHLO's `composite`: a backend that has
    /// its own kernel for `name` may run that instead (see
    /// [`crate::EmitOptions::composite_calls`]); everywhere else, in the interpreter and
    /// for autodiff, the decomposition is what it computes.
    ///
    /// `vjp`, if given, is the gradient autodiff uses instead of differentiating the
    /// decomposition (JAX's `custom_vjp`): a function of the operands, the outputs and
    /// one cotangent per output, returning one cotangent per operand. It must agree with
    /// the decomposition's own gradient; it exists so that the backward pass can be a
    /// composite (a kernel) of its own.
    Composite {
        name: String,
        decomposition: Box<Function>,
        vjp: Option<Box<Function>>,
    },
}

impl Op {
    /// Short name used in error messages and value names.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Parameter { .. } => "parameter",
            Op::Constant(_) => "constant",
            Op::Iota { .. } => "iota",
            Op::Convert { .. } => "convert",
            Op::BitcastConvert { .. } => "bitcast_convert",
            Op::BroadcastInDim { .. } => "broadcast_in_dim",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::DynamicSlice { .. } => "dynamic_slice",
            Op::DynamicUpdateSlice => "dynamic_update_slice",
            Op::Concatenate { .. } => "concatenate",
            Op::Pad { .. } => "pad",
            Op::Select => "select",
            Op::Compare { .. } => "compare",
            Op::Clamp => "clamp",
            Op::Unary(u) => match u {
                UnaryOp::Neg => "negate",
                UnaryOp::Abs => "abs",
                UnaryOp::Exp => "exponential",
                UnaryOp::Log => "log",
                UnaryOp::Log1p => "log_plus_one",
                UnaryOp::Tanh => "tanh",
                UnaryOp::Logistic => "logistic",
                UnaryOp::Sqrt => "sqrt",
                UnaryOp::Rsqrt => "rsqrt",
                UnaryOp::Sign => "sign",
                UnaryOp::Floor => "floor",
                UnaryOp::Cos => "cosine",
                UnaryOp::Sin => "sine",
                UnaryOp::Not => "not",
            },
            Op::Binary(b) => match b {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "subtract",
                BinaryOp::Mul => "multiply",
                BinaryOp::Div => "divide",
                BinaryOp::Max => "maximum",
                BinaryOp::Min => "minimum",
                BinaryOp::Pow => "power",
                BinaryOp::Rem => "remainder",
                BinaryOp::And => "and",
                BinaryOp::Or => "or",
                BinaryOp::Xor => "xor",
                BinaryOp::ShiftLeft => "shift_left",
                BinaryOp::ShiftRightLogical => "shift_right_logical",
            },
            Op::DotGeneral { .. } => "dot_general",
            Op::Reduce { .. } => "reduce",
            Op::Gather { .. } => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::RngBitGenerator { .. } => "rng_bit_generator",
            Op::Sort { .. } => "sort",
            Op::ShardingConstraint { .. } => "sharding_constraint",
            Op::StopGradient => "stop_gradient",
            Op::While { .. } => "while",
            Op::Composite { .. } => "composite",
        }
    }
}

/// One primitive applied to earlier values.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub operands: Vec<ValueRef>,
    /// Output types (one for most ops).
    pub outputs: Vec<Shape>,
    /// Optional readable name, used for value names in the emitted text.
    pub name: Option<String>,
}

/// A function argument: its type, a readable name and how it is laid out over devices.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Shape,
    pub sharding: Option<PartitionSpec>,
    /// If set, this argument's buffer is donated and reused for that result.
    pub alias_output: Option<usize>,
}

/// A function result.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub value: ValueRef,
    pub name: Option<String>,
    pub sharding: Option<PartitionSpec>,
}

/// A complete, shape-checked program: what emission and the runtime consume.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    pub name: String,
    pub params: Vec<Param>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
    /// The device mesh that shardings refer to (None: single device).
    pub mesh: Option<Mesh>,
}

impl Function {
    pub fn value_shape(&self, v: ValueRef) -> &Shape {
        &self.nodes[v.node].outputs[v.output]
    }

    pub fn output_shapes(&self) -> Vec<Shape> {
        self.outputs
            .iter()
            .map(|o| self.value_shape(o.value).clone())
            .collect()
    }

    /// The type of output `index`, or None if it refers to a value that does not exist
    /// (a hand-made function; checks use this instead of panicking).
    pub fn output_shape(&self, index: usize) -> Option<&Shape> {
        let v = self.outputs.get(index)?.value;
        self.nodes.get(v.node)?.outputs.get(v.output)
    }

    /// Marks argument `param` as donated to result `output` (input/output aliasing).
    pub fn donate(&mut self, param: usize, output: usize) -> Result<(), String> {
        let p = self
            .params
            .get(param)
            .ok_or_else(|| format!("no parameter {param}"))?;
        let o = self
            .outputs
            .get(output)
            .ok_or_else(|| format!("no output {output}"))?;
        let out_shape = self.value_shape(o.value);
        if &p.shape != out_shape {
            return Err(format!(
                "cannot donate parameter {param} ({}) to output {output} ({out_shape}): types differ",
                p.shape
            ));
        }
        self.params[param].alias_output = Some(output);
        Ok(())
    }

    /// Which nodes contribute to the outputs (emission skips the rest).
    pub fn live_nodes(&self) -> Vec<bool> {
        let mut live = vec![false; self.nodes.len()];
        for o in &self.outputs {
            live[o.value.node] = true;
        }
        for id in (0..self.nodes.len()).rev() {
            if live[id] {
                for v in &self.nodes[id].operands {
                    live[v.node] = true;
                }
            }
        }
        live
    }
}

/// The scalar type compare uses for an element type.
pub fn compare_type(dtype: DType) -> &'static str {
    if dtype.is_float() {
        "FLOAT"
    } else if dtype.is_unsigned_integer() || dtype == DType::Pred {
        "UNSIGNED"
    } else {
        "SIGNED"
    }
}
