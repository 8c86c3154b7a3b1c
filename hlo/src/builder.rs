//! The graph builder: tensors are handles into a shared graph, ops are methods.
//!
//! Like XLA's `XlaBuilder`, a failing op does not return an error at once: the builder
//! remembers the first [`BuildError`] (with the caller's file and line, thanks to
//! `#[track_caller]`) and hands back a placeholder so model code reads like math without a
//! `?` on every line; [`Builder::build`] then reports it. Every op's result type comes from
//! [`crate::shape_inference::infer`].

use crate::dtype::DType;
use crate::error::BuildError;
use crate::ir::{
    BinaryOp, CompareDirection, DotDims, Function, GatherDims, Node, Op, Output, Param, ReduceKind,
    RngAlgorithm, ScatterDims, UnaryOp, ValueRef,
};
use crate::literal::{Literal, NativeType};
use crate::shape::Shape;
use crate::shape_inference::infer;
use crate::sharding::{Mesh, PartitionSpec};
use std::cell::RefCell;
use std::panic::Location;
use std::rc::Rc;

#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    params: Vec<Param>,
    error: Option<BuildError>,
    mesh: Option<Mesh>,
}

/// Builds one function. Cheap to clone (a shared handle).
#[derive(Clone, Default)]
pub struct Builder {
    name: Rc<str>,
    graph: Rc<RefCell<Graph>>,
}

/// A value in a builder's graph, with its type cached.
#[derive(Clone)]
pub struct Tensor {
    builder: Builder,
    value: ValueRef,
    shape: Shape,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(%{}#{}: {})",
            self.value.node, self.value.output, self.shape
        )
    }
}

impl Builder {
    pub fn new(name: &str) -> Builder {
        Builder {
            name: Rc::from(name),
            graph: Rc::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Declares the next function argument.
    pub fn parameter(&self, name: &str, shape: Shape) -> Tensor {
        let mut g = self.graph.borrow_mut();
        let index = g.params.len();
        g.params.push(Param {
            name: name.to_string(),
            shape: shape.clone(),
            sharding: None,
            alias_output: None,
        });
        g.nodes.push(Node {
            op: Op::Parameter { index },
            operands: vec![],
            outputs: vec![shape.clone()],
            name: Some(name.to_string()),
        });
        let node = g.nodes.len() - 1;
        Tensor {
            builder: self.clone(),
            value: ValueRef { node, output: 0 },
            shape,
        }
    }

    /// Declares an argument laid out over the mesh by `spec`.
    #[track_caller]
    pub fn parameter_sharded(&self, name: &str, shape: Shape, spec: PartitionSpec) -> Tensor {
        let t = self.parameter(name, shape);
        if spec.dims.len() != t.rank() {
            self.record(BuildError {
                op: "parameter".into(),
                operands: vec![t.shape.to_string()],
                message: format!(
                    "partition spec has {} dimensions for {name}",
                    spec.dims.len()
                ),
                location: Location::caller(),
            });
        }
        let mut g = self.graph.borrow_mut();
        let last = g.params.len() - 1;
        g.params[last].sharding = Some(spec);
        drop(g);
        t
    }

    /// The device mesh that shardings in this function refer to.
    pub fn set_mesh(&self, mesh: Mesh) {
        self.graph.borrow_mut().mesh = Some(mesh);
    }

    pub fn mesh(&self) -> Option<Mesh> {
        self.graph.borrow().mesh.clone()
    }

    pub fn constant(&self, literal: Literal) -> Tensor {
        self.apply_one(Op::Constant(literal), &[])
    }

    /// A scalar constant of any element type.
    pub fn scalar(&self, value: f64, dtype: DType) -> Tensor {
        self.constant(Literal::scalar_from_f64(value, dtype))
    }

    /// A constant from typed host values.
    #[track_caller]
    pub fn array<T: NativeType>(&self, dims: &[i64], values: &[T]) -> Tensor {
        match Literal::from_slice(dims, values) {
            Ok(l) => self.constant(l),
            Err(e) => self.fail(
                "constant",
                &[],
                e.to_string(),
                Shape::new(T::DTYPE, dims.to_vec()),
            ),
        }
    }

    /// `value` broadcast to `shape`.
    #[track_caller]
    pub fn splat(&self, value: f64, shape: &Shape) -> Tensor {
        self.scalar(value, shape.dtype)
            .broadcast_in_dim(&shape.dims, &[])
    }

    pub fn zeros(&self, shape: &Shape) -> Tensor {
        self.splat(0.0, shape)
    }

    #[track_caller]
    pub fn iota(&self, shape: &Shape, dim: i64) -> Tensor {
        self.apply_one(
            Op::Iota {
                shape: shape.clone(),
                dim,
            },
            &[],
        )
    }

    /// Concatenates along `dim`.
    #[track_caller]
    pub fn concatenate(&self, parts: &[Tensor], dim: i64) -> Tensor {
        let refs: Vec<&Tensor> = parts.iter().collect();
        self.apply_one(Op::Concatenate { dim }, &refs)
    }

    /// New random state and `shape` random bits (u32/u64) from a `u64[2]` state.
    #[track_caller]
    pub fn rng_bit_generator(&self, state: &Tensor, shape: &Shape) -> (Tensor, Tensor) {
        let op = Op::RngBitGenerator {
            algorithm: RngAlgorithm::ThreeFry,
            shape: shape.clone(),
        };
        let mut out = self.apply(op, &[state]);
        let bits = out.pop().expect("two outputs");
        let state = out.pop().expect("two outputs");
        (state, bits)
    }

    /// Uniform f32 values in [lo, hi) of `dims`, and the advanced state.
    #[track_caller]
    pub fn uniform(&self, state: &Tensor, dims: &[i64], lo: f64, hi: f64) -> (Tensor, Tensor) {
        let (state, bits) = self.rng_bit_generator(state, &Shape::new(DType::U32, dims.to_vec()));
        // Keep 23 random mantissa bits under exponent 0 -> a float in [1, 2), minus 1.
        let mantissa = bits.shift_right_logical(&self.scalar(9.0, DType::U32).broadcast_to(dims));
        let one_bits = self
            .scalar(0x3f80_0000u32 as f64, DType::U32)
            .broadcast_to(dims);
        let unit = mantissa.or(&one_bits).bitcast(DType::F32).sub_scalar(1.0);
        (state, unit.mul_scalar(hi - lo).add_scalar(lo))
    }

    /// Standard normal f32 values of `dims` (Box-Muller), and the advanced state.
    #[track_caller]
    pub fn normal(&self, state: &Tensor, dims: &[i64]) -> (Tensor, Tensor) {
        let (state, u1) = self.uniform(state, dims, 0.0, 1.0);
        let (state, u2) = self.uniform(&state, dims, 0.0, 1.0);
        // 1 - u1 lies in (0, 1], so the log is finite.
        let r = u1.neg().add_scalar(1.0).log().mul_scalar(-2.0).sqrt();
        let theta = u2.mul_scalar(2.0 * std::f64::consts::PI);
        (state, r.mul(&theta.cos()))
    }

    /// Stable sort along `dim` keyed by the first operand; returns one tensor per operand.
    #[track_caller]
    pub fn sort(&self, operands: &[Tensor], dim: i64, descending: bool) -> Vec<Tensor> {
        let refs: Vec<&Tensor> = operands.iter().collect();
        self.apply(Op::Sort { dim, descending }, &refs)
    }

    /// A `while` loop. `init` are the initial loop-carried values; `captured` are outer
    /// values the loop reads but does not change (weights, say). `cond` and `body` are
    /// built in their own builders and see the carried values followed by the captured
    /// ones; `cond` returns a `pred[]` (go on?), `body` the next carried values (same types
    /// as `init`). Returns the carried values after the last iteration.
    ///
    /// Tensors of the outer graph cannot be used inside directly (a build error says so):
    /// they enter through `captured`, which become loop-carried values that the body
    /// passes through unchanged (XLA keeps them in place). A failing `cond` or `body`
    /// records its own error, with the location inside the closure.
    #[track_caller]
    pub fn while_loop(
        &self,
        init: &[Tensor],
        captured: &[Tensor],
        cond: impl FnOnce(&Builder, &[Tensor]) -> Tensor,
        body: impl FnOnce(&Builder, &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let all: Vec<&Tensor> = init.iter().chain(captured).collect();
        let types: Vec<Shape> = all.iter().map(|t| t.shape.clone()).collect();
        let cond = self.region("cond", &types, |b, args| vec![cond(b, args)]);
        let body = self.region("body", &types, |b, args| {
            let mut next = body(b, args);
            next.extend_from_slice(&args[init.len()..]);
            next
        });
        let placeholders = || {
            init.iter()
                .map(|t| self.placeholder(t.shape.clone()))
                .collect()
        };
        let (Some(cond), Some(body)) = (cond, body) else {
            return placeholders();
        };
        let op = Op::While {
            cond: Box::new(cond),
            body: Box::new(body),
        };
        let mut out = self.apply(op, &all);
        if out.len() != all.len() {
            // Shape inference failed (the error is recorded); keep the caller's arity.
            return placeholders();
        }
        out.truncate(init.len());
        out
    }

    /// A composite named `name` (see [`Op::Composite`]): `decomposition` builds what it
    /// computes from the operands' types, in a graph of its own (outer values enter only
    /// as operands).
    #[track_caller]
    pub fn composite(
        &self,
        name: &str,
        operands: &[Tensor],
        decomposition: impl FnOnce(&Builder, &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let args: Vec<&Tensor> = operands.iter().collect();
        let types: Vec<Shape> = operands.iter().map(|t| t.shape.clone()).collect();
        let Some(f) = self.region(name, &types, decomposition) else {
            return vec![self.placeholder(Shape::scalar(DType::F32))];
        };
        let op = Op::Composite {
            name: name.to_string(),
            decomposition: Box::new(f),
            vjp: None,
        };
        self.apply(op, &args)
    }

    /// [`Builder::composite`] with its own gradient: `vjp` gets the operands, the
    /// outputs and one cotangent per output, and returns one cotangent per operand (see
    /// [`Op::Composite`]).
    #[track_caller]
    pub fn composite_with_vjp(
        &self,
        name: &str,
        operands: &[Tensor],
        decomposition: impl FnOnce(&Builder, &[Tensor]) -> Vec<Tensor>,
        vjp: impl FnOnce(&Builder, &[Tensor], &[Tensor], &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let args: Vec<&Tensor> = operands.iter().collect();
        let types: Vec<Shape> = operands.iter().map(|t| t.shape.clone()).collect();
        let Some(f) = self.region(name, &types, decomposition) else {
            return vec![self.placeholder(Shape::scalar(DType::F32))];
        };
        let (n, m) = (operands.len(), f.outputs.len());
        let outputs: Vec<Shape> = (0..m).filter_map(|k| f.output_shape(k).cloned()).collect();
        let typed: Vec<Shape> = [types, outputs.clone(), outputs.clone()].concat();
        let g = self.region(&format!("{name}_vjp"), &typed, |b, a| {
            vjp(b, &a[..n], &a[n..n + m], &a[n + m..])
        });
        let Some(g) = g else {
            return outputs.into_iter().map(|s| self.placeholder(s)).collect();
        };
        let op = Op::Composite {
            name: name.to_string(),
            decomposition: Box::new(f),
            vjp: Some(Box::new(g)),
        };
        self.apply(op, &args)
    }

    /// `f`'s nodes appended to this graph with `args` for its parameters: its outputs, as
    /// if `f` had been built here (a composite's decomposition, for its gradient).
    #[track_caller]
    pub fn inline(&self, f: &Function, args: &[Tensor]) -> Vec<Tensor> {
        let mut values: Vec<Vec<Tensor>> = Vec::with_capacity(f.nodes.len());
        for node in &f.nodes {
            let outs = match &node.op {
                Op::Parameter { index } => match args.get(*index) {
                    Some(a) => vec![a.clone()],
                    None => vec![self.fail(
                        "inline",
                        &[],
                        format!("`{}` has no argument {index}", f.name),
                        node.outputs[0].clone(),
                    )],
                },
                op => {
                    let operands: Vec<&Tensor> = node
                        .operands
                        .iter()
                        .map(|v| &values[v.node][v.output])
                        .collect();
                    self.apply(op.clone(), &operands)
                }
            };
            values.push(outs);
        }
        f.outputs
            .iter()
            .map(|o| values[o.value.node][o.value.output].clone())
            .collect()
    }

    /// Builds a function of values of the given types (a while loop's condition or body,
    /// a composite's decomposition or VJP); records its build error here and returns None
    /// on failure.
    #[track_caller]
    fn region(
        &self,
        what: &str,
        carried: &[Shape],
        f: impl FnOnce(&Builder, &[Tensor]) -> Vec<Tensor>,
    ) -> Option<Function> {
        let rb = Builder::new(&format!("{}_{what}", self.name));
        if let Some(m) = self.mesh() {
            rb.set_mesh(m);
        }
        let args: Vec<Tensor> = carried
            .iter()
            .enumerate()
            .map(|(i, t)| rb.parameter(&format!("{what}_arg{i}"), t.clone()))
            .collect();
        let outs = f(&rb, &args);
        if let Some(t) = outs.iter().find(|t| !t.builder.same_graph(&rb)) {
            self.record(BuildError {
                op: "while".into(),
                operands: vec![t.shape.to_string()],
                message: format!(
                    "the loop {what} returns a value of another graph; pass outer values \
                     in through `captured`"
                ),
                location: Location::caller(),
            });
            return None;
        }
        let refs: Vec<&Tensor> = outs.iter().collect();
        match rb.build(&refs) {
            Ok(f) => Some(f),
            Err(e) => {
                self.record(e);
                None
            }
        }
    }

    /// Applies any primitive with shape inference; the generic entry point used by the
    /// methods below and by autodiff rules.
    #[track_caller]
    pub fn apply(&self, op: Op, operands: &[&Tensor]) -> Vec<Tensor> {
        let shapes: Vec<Shape> = operands.iter().map(|t| t.shape.clone()).collect();
        if operands.iter().any(|t| !t.builder.same_graph(self)) {
            let guess = shapes
                .first()
                .cloned()
                .unwrap_or_else(|| Shape::scalar(DType::F32));
            let message = "an operand belongs to another builder's graph (a while loop's \
                           condition and body see outer values only through `captured`)";
            return vec![self.fail(op.name(), operands, message.into(), guess)];
        }
        let outputs = match infer(&op, &shapes) {
            Ok(o) => o,
            Err(message) => {
                let guess = shapes
                    .first()
                    .cloned()
                    .unwrap_or_else(|| Shape::scalar(DType::F32));
                let name = op.name();
                return vec![self.fail(name, operands, message, guess)];
            }
        };
        let operand_refs = operands.iter().map(|t| t.value).collect();
        let mut g = self.graph.borrow_mut();
        g.nodes.push(Node {
            op,
            operands: operand_refs,
            outputs: outputs.clone(),
            name: None,
        });
        let node = g.nodes.len() - 1;
        drop(g);
        outputs
            .into_iter()
            .enumerate()
            .map(|(output, shape)| Tensor {
                builder: self.clone(),
                value: ValueRef { node, output },
                shape,
            })
            .collect()
    }

    #[track_caller]
    pub fn apply_one(&self, op: Op, operands: &[&Tensor]) -> Tensor {
        let mut out = self.apply(op, operands);
        out.swap_remove(0)
    }

    /// Records an error (the first one wins) and returns a placeholder of `guess`'s type.
    #[track_caller]
    fn fail(&self, op: &str, operands: &[&Tensor], message: String, guess: Shape) -> Tensor {
        self.record(BuildError {
            op: op.to_string(),
            operands: operands.iter().map(|t| t.shape.to_string()).collect(),
            message,
            location: Location::caller(),
        });
        self.placeholder(guess)
    }

    /// A stand-in value of type `shape`, returned after an error was recorded so that
    /// building can go on until [`Builder::build`] reports it.
    fn placeholder(&self, guess: Shape) -> Tensor {
        let lit = Literal::zeros(guess.clone());
        let mut g = self.graph.borrow_mut();
        g.nodes.push(Node {
            op: Op::Constant(lit),
            operands: vec![],
            outputs: vec![guess.clone()],
            name: None,
        });
        let node = g.nodes.len() - 1;
        drop(g);
        Tensor {
            builder: self.clone(),
            value: ValueRef { node, output: 0 },
            shape: guess,
        }
    }

    fn record(&self, err: BuildError) {
        let mut g = self.graph.borrow_mut();
        if g.error.is_none() {
            g.error = Some(err);
        }
    }

    /// The first error recorded so far, if any.
    pub fn error(&self) -> Option<BuildError> {
        self.graph.borrow().error.clone()
    }

    /// Whether `other` is a handle to this same graph (tensors of different builders
    /// cannot be mixed; autodiff checks this).
    pub fn same_graph(&self, other: &Builder) -> bool {
        Rc::ptr_eq(&self.graph, &other.graph)
    }

    /// Number of nodes so far (autodiff walks them).
    pub fn num_nodes(&self) -> usize {
        self.graph.borrow().nodes.len()
    }

    /// A copy of node `id`.
    pub fn node(&self, id: usize) -> Node {
        self.graph.borrow().nodes[id].clone()
    }

    /// A handle to an existing value of this graph.
    pub fn tensor(&self, value: ValueRef) -> Tensor {
        let shape = self.graph.borrow().nodes[value.node].outputs[value.output].clone();
        Tensor {
            builder: self.clone(),
            value,
            shape,
        }
    }

    /// Finishes the function with these results (unnamed).
    pub fn build(&self, outputs: &[&Tensor]) -> Result<Function, BuildError> {
        let named: Vec<(&str, &Tensor)> = outputs.iter().map(|t| ("", *t)).collect();
        self.build_named(&named)
    }

    /// Finishes the function with named results (names show up in the emitted text and
    /// in manifests; "" for none).
    pub fn build_named(&self, outputs: &[(&str, &Tensor)]) -> Result<Function, BuildError> {
        let g = self.graph.borrow();
        if let Some(e) = &g.error {
            return Err(e.clone());
        }
        Ok(Function {
            name: self.name.to_string(),
            params: g.params.clone(),
            nodes: g.nodes.clone(),
            outputs: outputs
                .iter()
                .map(|(n, t)| Output {
                    value: t.value,
                    name: (!n.is_empty()).then(|| n.to_string()),
                    sharding: None,
                })
                .collect(),
            mesh: g.mesh.clone(),
        })
    }
}

/// Broadcast result dimensions of two shapes under NumPy rules (trailing alignment).
fn broadcast_dims(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i < r - a.len() {
            1
        } else {
            a[i - (r - a.len())]
        };
        let db = if i < r - b.len() {
            1
        } else {
            b[i - (r - b.len())]
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

impl Tensor {
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dims(&self) -> &[i64] {
        &self.shape.dims
    }

    pub fn dtype(&self) -> DType {
        self.shape.dtype
    }

    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    pub fn value(&self) -> ValueRef {
        self.value
    }

    pub fn builder(&self) -> &Builder {
        &self.builder
    }

    /// Gives the value a readable name in the emitted text.
    pub fn named(self, name: &str) -> Tensor {
        self.builder.graph.borrow_mut().nodes[self.value.node].name = Some(name.to_string());
        self
    }

    /// Normalises a possibly negative dimension index.
    fn axis(&self, dim: i64) -> i64 {
        if dim < 0 {
            dim + self.rank() as i64
        } else {
            dim
        }
    }

    #[track_caller]
    fn unary(&self, u: UnaryOp) -> Tensor {
        self.builder.apply_one(Op::Unary(u), &[self])
    }

    /// Elementwise binary op with NumPy-style broadcasting of both sides.
    #[track_caller]
    fn binary(&self, b: BinaryOp, other: &Tensor) -> Tensor {
        let (x, y) = self.broadcast_pair(other, Op::Binary(b).name());
        self.builder.apply_one(Op::Binary(b), &[&x, &y])
    }

    #[track_caller]
    fn broadcast_pair(&self, other: &Tensor, op: &str) -> (Tensor, Tensor) {
        if self.dims() == other.dims() {
            return (self.clone(), other.clone());
        }
        match broadcast_dims(self.dims(), other.dims()) {
            Some(d) => (self.broadcast_to(&d), other.broadcast_to(&d)),
            None => {
                let msg = "dimensions do not broadcast together".to_string();
                let t = self
                    .builder
                    .fail(op, &[self, other], msg, self.shape.clone());
                (t.clone(), t)
            }
        }
    }

    // ---- elementwise unary ----
    #[track_caller]
    pub fn neg(&self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
    #[track_caller]
    pub fn abs(&self) -> Tensor {
        self.unary(UnaryOp::Abs)
    }
    #[track_caller]
    pub fn exp(&self) -> Tensor {
        self.unary(UnaryOp::Exp)
    }
    #[track_caller]
    pub fn log(&self) -> Tensor {
        self.unary(UnaryOp::Log)
    }
    #[track_caller]
    pub fn log1p(&self) -> Tensor {
        self.unary(UnaryOp::Log1p)
    }
    #[track_caller]
    pub fn tanh(&self) -> Tensor {
        self.unary(UnaryOp::Tanh)
    }
    /// The logistic sigmoid 1 / (1 + e^-x).
    #[track_caller]
    pub fn logistic(&self) -> Tensor {
        self.unary(UnaryOp::Logistic)
    }
    #[track_caller]
    pub fn sqrt(&self) -> Tensor {
        self.unary(UnaryOp::Sqrt)
    }
    #[track_caller]
    pub fn rsqrt(&self) -> Tensor {
        self.unary(UnaryOp::Rsqrt)
    }
    #[track_caller]
    pub fn sign(&self) -> Tensor {
        self.unary(UnaryOp::Sign)
    }
    #[track_caller]
    pub fn floor(&self) -> Tensor {
        self.unary(UnaryOp::Floor)
    }
    #[track_caller]
    pub fn cos(&self) -> Tensor {
        self.unary(UnaryOp::Cos)
    }
    #[track_caller]
    pub fn sin(&self) -> Tensor {
        self.unary(UnaryOp::Sin)
    }
    #[track_caller]
    pub fn not(&self) -> Tensor {
        self.unary(UnaryOp::Not)
    }
    /// x * sigmoid(x), the "swish" (SiLU) activation.
    #[track_caller]
    pub fn swish(&self) -> Tensor {
        self.mul(&self.logistic())
    }
    #[track_caller]
    pub fn relu(&self) -> Tensor {
        self.max(&self.builder.scalar(0.0, self.dtype()))
    }

    // ---- elementwise binary (broadcasting) ----
    #[track_caller]
    pub fn add(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Add, o)
    }
    #[track_caller]
    pub fn sub(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Sub, o)
    }
    #[track_caller]
    pub fn mul(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Mul, o)
    }
    #[track_caller]
    pub fn div(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Div, o)
    }
    #[track_caller]
    pub fn max(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Max, o)
    }
    #[track_caller]
    pub fn min(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Min, o)
    }
    #[track_caller]
    pub fn pow(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Pow, o)
    }
    #[track_caller]
    pub fn rem(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Rem, o)
    }
    #[track_caller]
    pub fn and(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::And, o)
    }
    #[track_caller]
    pub fn or(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Or, o)
    }
    #[track_caller]
    pub fn xor(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::Xor, o)
    }
    #[track_caller]
    pub fn shift_left(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::ShiftLeft, o)
    }
    #[track_caller]
    pub fn shift_right_logical(&self, o: &Tensor) -> Tensor {
        self.binary(BinaryOp::ShiftRightLogical, o)
    }

    /// A scalar constant of this tensor's element type.
    pub fn scalar_like(&self, v: f64) -> Tensor {
        self.builder.scalar(v, self.dtype())
    }
    #[track_caller]
    pub fn add_scalar(&self, v: f64) -> Tensor {
        self.add(&self.scalar_like(v))
    }
    #[track_caller]
    pub fn sub_scalar(&self, v: f64) -> Tensor {
        self.sub(&self.scalar_like(v))
    }
    #[track_caller]
    pub fn mul_scalar(&self, v: f64) -> Tensor {
        self.mul(&self.scalar_like(v))
    }
    #[track_caller]
    pub fn div_scalar(&self, v: f64) -> Tensor {
        self.div(&self.scalar_like(v))
    }
    #[track_caller]
    pub fn square(&self) -> Tensor {
        self.mul(self)
    }

    // ---- comparisons and selection ----
    #[track_caller]
    pub fn compare(&self, o: &Tensor, direction: CompareDirection) -> Tensor {
        let (x, y) = self.broadcast_pair(o, "compare");
        self.builder.apply_one(Op::Compare { direction }, &[&x, &y])
    }
    #[track_caller]
    pub fn eq(&self, o: &Tensor) -> Tensor {
        self.compare(o, CompareDirection::Eq)
    }
    #[track_caller]
    pub fn ne(&self, o: &Tensor) -> Tensor {
        self.compare(o, CompareDirection::Ne)
    }
    #[track_caller]
    pub fn lt(&self, o: &Tensor) -> Tensor {
        self.compare(o, CompareDirection::Lt)
    }
    #[track_caller]
    pub fn le(&self, o: &Tensor) -> Tensor {
        self.compare(o, CompareDirection::Le)
    }
    #[track_caller]
    pub fn gt(&self, o: &Tensor) -> Tensor {
        self.compare(o, CompareDirection::Gt)
    }
    #[track_caller]
    pub fn ge(&self, o: &Tensor) -> Tensor {
        self.compare(o, CompareDirection::Ge)
    }

    /// `self` is a pred mask: picks `on_true` where set, else `on_false` (all broadcast).
    #[track_caller]
    pub fn select(&self, on_true: &Tensor, on_false: &Tensor) -> Tensor {
        let dims = broadcast_dims(self.dims(), on_true.dims())
            .and_then(|d| broadcast_dims(&d, on_false.dims()));
        match dims {
            Some(d) => {
                let p = self.broadcast_to(&d);
                let t = on_true.broadcast_to(&d);
                let f = on_false.broadcast_to(&d);
                self.builder.apply_one(Op::Select, &[&p, &t, &f])
            }
            None => self.builder.fail(
                "select",
                &[self, on_true, on_false],
                "dimensions do not broadcast together".into(),
                on_true.shape.clone(),
            ),
        }
    }

    /// Clamps into [lo, hi] (scalars or tensors of this shape).
    #[track_caller]
    pub fn clamp(&self, lo: &Tensor, hi: &Tensor) -> Tensor {
        self.builder.apply_one(Op::Clamp, &[lo, self, hi])
    }

    // ---- types and layout ----
    #[track_caller]
    pub fn convert(&self, to: DType) -> Tensor {
        if to == self.dtype() {
            return self.clone();
        }
        self.builder.apply_one(Op::Convert { to }, &[self])
    }
    #[track_caller]
    pub fn bitcast(&self, to: DType) -> Tensor {
        self.builder.apply_one(Op::BitcastConvert { to }, &[self])
    }
    #[track_caller]
    pub fn reshape(&self, dims: &[i64]) -> Tensor {
        if dims == self.dims() {
            return self.clone();
        }
        self.builder.apply_one(
            Op::Reshape {
                dims: dims.to_vec(),
            },
            &[self],
        )
    }
    #[track_caller]
    pub fn transpose(&self, perm: &[i64]) -> Tensor {
        if perm.iter().enumerate().all(|(i, &p)| i as i64 == p) && perm.len() == self.rank() {
            return self.clone();
        }
        self.builder.apply_one(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            &[self],
        )
    }
    /// Operand dimension i goes to result dimension `dims[i]` of `shape`.
    #[track_caller]
    pub fn broadcast_in_dim(&self, shape: &[i64], dims: &[i64]) -> Tensor {
        self.builder.apply_one(
            Op::BroadcastInDim {
                shape: shape.to_vec(),
                dims: dims.to_vec(),
            },
            &[self],
        )
    }
    /// NumPy-style broadcast (trailing dimensions aligned).
    #[track_caller]
    pub fn broadcast_to(&self, dims: &[i64]) -> Tensor {
        if dims == self.dims() {
            return self.clone();
        }
        if dims.len() < self.rank() {
            return self.builder.fail(
                "broadcast_to",
                &[self],
                format!("cannot broadcast to fewer dimensions {dims:?}"),
                self.shape.clone(),
            );
        }
        let offset = (dims.len() - self.rank()) as i64;
        let map: Vec<i64> = (0..self.rank() as i64).map(|i| i + offset).collect();
        self.broadcast_in_dim(dims, &map)
    }
    #[track_caller]
    pub fn slice(&self, start: &[i64], limit: &[i64], strides: &[i64]) -> Tensor {
        let op = Op::Slice {
            start: start.to_vec(),
            limit: limit.to_vec(),
            strides: strides.to_vec(),
        };
        self.builder.apply_one(op, &[self])
    }
    /// `self[.., start..end, ..]` along one dimension.
    #[track_caller]
    pub fn slice_dim(&self, dim: i64, start: i64, end: i64) -> Tensor {
        let d = self.axis(dim) as usize;
        let mut s = vec![0; self.rank()];
        let mut l = self.dims().to_vec();
        if d < self.rank() {
            s[d] = start;
            l[d] = end;
        }
        self.slice(&s, &l, &vec![1; self.rank()])
    }
    #[track_caller]
    pub fn dynamic_slice(&self, starts: &[Tensor], sizes: &[i64]) -> Tensor {
        let mut ops: Vec<&Tensor> = vec![self];
        ops.extend(starts.iter());
        self.builder.apply_one(
            Op::DynamicSlice {
                sizes: sizes.to_vec(),
            },
            &ops,
        )
    }
    #[track_caller]
    pub fn dynamic_update_slice(&self, update: &Tensor, starts: &[Tensor]) -> Tensor {
        let mut ops: Vec<&Tensor> = vec![self, update];
        ops.extend(starts.iter());
        self.builder.apply_one(Op::DynamicUpdateSlice, &ops)
    }
    #[track_caller]
    pub fn pad(&self, value: &Tensor, low: &[i64], high: &[i64], interior: &[i64]) -> Tensor {
        let op = Op::Pad {
            low: low.to_vec(),
            high: high.to_vec(),
            interior: interior.to_vec(),
        };
        self.builder.apply_one(op, &[self, value])
    }

    // ---- contractions ----
    #[track_caller]
    pub fn dot_general(&self, rhs: &Tensor, dims: DotDims) -> Tensor {
        self.builder
            .apply_one(Op::DotGeneral { dims }, &[self, rhs])
    }
    /// `[..., k] x [k, n] -> [..., n]`, or batched `[b..., m, k] x [b..., k, n]`.
    #[track_caller]
    pub fn matmul(&self, rhs: &Tensor) -> Tensor {
        let lr = self.rank() as i64;
        if rhs.rank() == 2 {
            return self.dot_general(
                rhs,
                DotDims {
                    lhs_contracting: vec![lr - 1],
                    rhs_contracting: vec![0],
                    ..Default::default()
                },
            );
        }
        let rr = rhs.rank() as i64;
        let nb = (rr - 2).max(0);
        self.dot_general(
            rhs,
            DotDims {
                lhs_batch: (0..nb).collect(),
                rhs_batch: (0..nb).collect(),
                lhs_contracting: vec![lr - 1],
                rhs_contracting: vec![rr - 2],
            },
        )
    }

    // ---- reductions ----
    #[track_caller]
    pub fn reduce(&self, kind: ReduceKind, dims: &[i64]) -> Tensor {
        let dims: Vec<i64> = dims.iter().map(|&d| self.axis(d)).collect();
        self.builder.apply_one(Op::Reduce { kind, dims }, &[self])
    }
    #[track_caller]
    pub fn reduce_sum(&self, dims: &[i64]) -> Tensor {
        self.reduce(ReduceKind::Sum, dims)
    }
    #[track_caller]
    pub fn reduce_max(&self, dims: &[i64]) -> Tensor {
        self.reduce(ReduceKind::Max, dims)
    }
    #[track_caller]
    pub fn reduce_min(&self, dims: &[i64]) -> Tensor {
        self.reduce(ReduceKind::Min, dims)
    }
    #[track_caller]
    pub fn reduce_and(&self, dims: &[i64]) -> Tensor {
        self.reduce(ReduceKind::And, dims)
    }
    #[track_caller]
    pub fn reduce_or(&self, dims: &[i64]) -> Tensor {
        self.reduce(ReduceKind::Or, dims)
    }
    /// Sum over all dimensions to a scalar.
    #[track_caller]
    pub fn sum_all(&self) -> Tensor {
        let dims: Vec<i64> = (0..self.rank() as i64).collect();
        self.reduce_sum(&dims)
    }
    #[track_caller]
    pub fn mean(&self, dims: &[i64]) -> Tensor {
        let n: i64 = dims
            .iter()
            .map(|&d| self.dims()[self.axis(d) as usize])
            .product();
        self.reduce_sum(dims).div_scalar(n as f64)
    }
    /// Re-inserts reduced dimension `dim` with size 1 (keepdims).
    #[track_caller]
    pub fn expand_dim(&self, dim: i64) -> Tensor {
        let mut d = self.dims().to_vec();
        let at = if dim < 0 {
            dim + d.len() as i64 + 1
        } else {
            dim
        } as usize;
        d.insert(at.min(d.len()), 1);
        self.reshape(&d)
    }
    /// Index (s32) of the largest value along `dim`; the first one on ties.
    #[track_caller]
    pub fn argmax(&self, dim: i64) -> Tensor {
        self.arg_extreme(dim, true)
    }
    /// Index (s32) of the smallest value along `dim`; the first one on ties.
    #[track_caller]
    pub fn argmin(&self, dim: i64) -> Tensor {
        self.arg_extreme(dim, false)
    }
    #[track_caller]
    fn arg_extreme(&self, dim: i64, max: bool) -> Tensor {
        let d = self.axis(dim);
        let best = if max {
            self.reduce_max(&[d])
        } else {
            self.reduce_min(&[d])
        };
        let hit = self.eq(&best.expand_dim(d));
        let idx = self.builder.iota(&self.shape.with_dtype(DType::S32), d);
        let big = self.builder.scalar(i32::MAX as f64, DType::S32);
        hit.select(&idx, &big).reduce_min(&[d])
    }
    /// Inclusive cumulative sum along `dim`: a log-depth scan (Hillis-Steele) of shifted
    /// adds, ceil(log2 n) pads and adds of the whole tensor; no loop, no `[n, n]` matrix.
    #[track_caller]
    pub fn cumsum(&self, dim: i64) -> Tensor {
        let d = self.axis(dim) as usize;
        let n = self.dims().get(d).copied().unwrap_or(1);
        let zero = self.builder.scalar(0.0, self.dtype());
        let mut acc = self.clone();
        let mut shift = 1;
        while shift < n {
            let (mut low, mut high) = (vec![0; self.rank()], vec![0; self.rank()]);
            low[d] = shift;
            high[d] = -shift;
            let shifted = acc.pad(&zero, &low, &high, &vec![0; self.rank()]);
            acc = acc.add(&shifted);
            shift *= 2;
        }
        acc
    }
    /// Softmax along `dim`, computed stably.
    #[track_caller]
    pub fn softmax(&self, dim: i64) -> Tensor {
        let d = self.axis(dim);
        let m = self.reduce_max(&[d]).expand_dim(d).stop_gradient();
        let e = self.sub(&m).exp();
        e.div(&e.reduce_sum(&[d]).expand_dim(d))
    }
    /// log(sum(exp(x))) along `dim`, computed stably.
    #[track_caller]
    pub fn logsumexp(&self, dim: i64) -> Tensor {
        let d = self.axis(dim);
        let m = self.reduce_max(&[d]).stop_gradient();
        self.sub(&m.expand_dim(d))
            .exp()
            .reduce_sum(&[d])
            .log()
            .add(&m)
    }
    #[track_caller]
    pub fn log_softmax(&self, dim: i64) -> Tensor {
        let d = self.axis(dim);
        self.sub(&self.logsumexp(d).expand_dim(d))
    }
    /// `self` holds integer class ids; returns `[.., depth]` one-hot values of `dtype`.
    #[track_caller]
    pub fn one_hot(&self, depth: i64, dtype: DType) -> Tensor {
        let mut dims = self.dims().to_vec();
        dims.push(depth);
        let classes = self.builder.iota(
            &Shape::new(self.dtype(), dims.clone()),
            dims.len() as i64 - 1,
        );
        let hit = classes.eq(&self.expand_dim(-1));
        hit.convert(dtype)
    }

    // ---- indexing ----
    #[track_caller]
    pub fn gather(&self, indices: &Tensor, dims: GatherDims) -> Tensor {
        self.builder
            .apply_one(Op::Gather { dims }, &[self, indices])
    }
    /// Rows of a `[V, d...]` table picked by integer `indices` of any rank:
    /// `[i...] -> [i..., d...]` (an embedding lookup).
    #[track_caller]
    pub fn take_rows(&self, indices: &Tensor) -> Tensor {
        let ir = indices.rank() as i64;
        let mut slice_sizes = self.dims().to_vec();
        if !slice_sizes.is_empty() {
            slice_sizes[0] = 1;
        }
        let dims = GatherDims {
            offset_dims: (ir..ir + self.rank() as i64 - 1).collect(),
            collapsed_slice_dims: vec![0],
            start_index_map: vec![0],
            index_vector_dim: ir,
            slice_sizes,
        };
        self.gather(indices, dims)
    }
    #[track_caller]
    pub fn scatter_add(&self, indices: &Tensor, updates: &Tensor, dims: ScatterDims) -> Tensor {
        self.builder
            .apply_one(Op::ScatterAdd { dims }, &[self, indices, updates])
    }
    /// The `k` largest values along the last dimension (descending) and their s32 indices.
    #[track_caller]
    pub fn top_k(&self, k: i64) -> (Tensor, Tensor) {
        let last = self.rank() as i64 - 1;
        let idx = self.builder.iota(&self.shape.with_dtype(DType::S32), last);
        let sorted = self.builder.sort(&[self.clone(), idx], last, true);
        if sorted.len() != 2 {
            return (sorted[0].clone(), sorted[0].clone());
        }
        (
            sorted[0].slice_dim(last, 0, k),
            sorted[1].slice_dim(last, 0, k),
        )
    }

    // ---- misc ----
    /// Pins how this intermediate is laid out over the mesh.
    #[track_caller]
    pub fn with_sharding(&self, spec: PartitionSpec) -> Tensor {
        self.builder
            .apply_one(Op::ShardingConstraint { spec }, &[self])
    }
    /// The same value, but no gradient flows back through it.
    #[track_caller]
    pub fn stop_gradient(&self) -> Tensor {
        self.builder.apply_one(Op::StopGradient, &[self])
    }
}

macro_rules! std_op {
    ($trait:ident, $method:ident, $impl:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.$impl(rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                (&self).$impl(&rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                (&self).$impl(rhs)
            }
        }
    };
}
std_op!(Add, add, add);
std_op!(Sub, sub, sub);
std_op!(Mul, mul, mul);
std_op!(Div, div, div);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_matmul_and_broadcasting() {
        let b = Builder::new("f");
        let x = b.parameter("x", Shape::new(DType::F32, [2, 3, 4]));
        let w = b.parameter("w", Shape::new(DType::F32, [4, 5]));
        let y = x.matmul(&w);
        assert_eq!(y.dims(), &[2, 3, 5]);
        let bias = b.parameter("bias", Shape::new(DType::F32, [5]));
        let z = &y + &bias;
        assert_eq!(z.dims(), &[2, 3, 5]);
        assert_eq!(z.reduce_sum(&[-1]).dims(), &[2, 3]);
        assert_eq!(z.argmax(1).dtype(), DType::S32);
        let f = b.build(&[&z]).unwrap();
        assert_eq!(f.params.len(), 3);
    }

    #[test]
    fn shape_errors_name_op_operands_and_location() {
        let b = Builder::new("f");
        let x = b.parameter("x", Shape::new(DType::F32, [2, 3]));
        let w = b.parameter("w", Shape::new(DType::F32, [4, 5]));
        let line = line!() + 1;
        let y = x.matmul(&w);
        let _ = y.tanh(); // keeps building on the placeholder without a second error
        let err = b.build(&[&y]).unwrap_err();
        assert_eq!(err.op, "dot_general");
        assert_eq!(err.operands, vec!["f32[2,3]", "f32[4,5]"]);
        assert!(err.message.contains("contracting"), "{}", err.message);
        assert_eq!(err.location.line(), line);
        assert!(err.to_string().contains("builder.rs"));
    }

    #[test]
    fn gather_and_scatter_types() {
        let b = Builder::new("f");
        let table = b.parameter("table", Shape::new(DType::F32, [10, 4]));
        let ids = b.parameter("ids", Shape::new(DType::S32, [2, 3]));
        let rows = table.take_rows(&ids);
        assert_eq!(rows.dims(), &[2, 3, 4]);
        let upd = b.zeros(&Shape::new(DType::F32, vec![2, 3, 4]));
        let back = b.zeros(table.shape()).scatter_add(
            &ids,
            &upd,
            ScatterDims {
                update_window_dims: vec![2],
                inserted_window_dims: vec![0],
                scatter_dims_to_operand_dims: vec![0],
                index_vector_dim: 2,
            },
        );
        assert_eq!(back.dims(), &[10, 4]);
        assert!(b.build(&[&back]).is_ok());
    }
}
