//! StableHLO emission: a [`Function`] becomes the MLIR text a PJRT plugin compiles.
//!
//! The output is one module with one public `@main`:
//!
//! ```text
//! module @mlp attributes {mhlo.num_partitions = 4 : i32, mhlo.num_replicas = 1 : i32} {
//!   sdy.mesh @mesh = <["model"=4]>
//!   func.func public @main(%x: tensor<8x16xf32>, %w1: tensor<16x32xf32> {sdy.sharding = ...})
//!       -> (tensor<8x4xf32>) {
//!     %2 = stablehlo.dot_general %x, %w1, contracting_dims = [1] x [0] : ...
//!     return %2 : tensor<8x4xf32>
//!   }
//! }
//! ```
//!
//! Only nodes that reach an output are emitted. Values are named after their node's name
//! (or parameter name) where one is set, otherwise after the node index. Each op is printed
//! in the form XLA's parser accepts for StableHLO 1.x: the short "pretty" form for simple
//! ops, the generic `"stablehlo.op"(...)` form for ops with regions or structured
//! attributes (gather, scatter, sort, slice).

mod constant;
mod ops;
pub mod sharding;

#[cfg(test)]
mod tests;

use crate::ir::{Function, Op, ValueRef};
use crate::sharding::{Mesh, PartitionSpec};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

pub use constant::dense_attr;

/// Which SPMD partitioner the sharding annotations are written for. It must match the
/// compile option `use_shardy_partitioner` the runtime passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Partitioner {
    /// The `sdy` dialect: a module-level mesh and `#sdy.sharding` attributes (XLA's and
    /// JAX's current default).
    #[default]
    Shardy,
    /// Legacy `mhlo.sharding` strings with explicit device tile assignments.
    Gspmd,
}

/// Knobs for [`to_stablehlo`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EmitOptions {
    pub partitioner: Partitioner,
    /// When set, large bf16 `dot_general`s are emitted as `stablehlo.custom_call
    /// @{prefix}_{l}{r}` (typed FFI) on rank-3 operands: `[B, M, K]` (`l` = `n`) or
    /// `[B, K, M]` (`t`) times `[B, K, N]` (`r` = `n`) or `[B, N, K]` (`t`), giving
    /// `[B, M, N]`: a backend's own kernel for the products its compiler would widen to
    /// f32 (see `bf16_dot_call` in `ops.rs` for which dots and how they are reshaped).
    pub bf16_dot_call: Option<String>,
    /// Composites (by name) that a backend runs as its own kernel: each becomes
    /// `stablehlo.custom_call @{target}(operands) {api_version = 4 : i32}` (typed FFI)
    /// with the composite's result types. Every other composite is emitted as its
    /// decomposition, inline.
    pub composite_calls: BTreeMap<String, String>,
}

impl EmitOptions {
    pub fn shardy() -> EmitOptions {
        EmitOptions {
            partitioner: Partitioner::Shardy,
            ..EmitOptions::default()
        }
    }

    pub fn gspmd() -> EmitOptions {
        EmitOptions {
            partitioner: Partitioner::Gspmd,
            ..EmitOptions::default()
        }
    }
}

/// Why a function could not be emitted. The builder rules out most of these; they guard
/// hand-made or transformed [`Function`]s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("{what}: sharding names mesh axis {axis:?}, which the mesh {mesh} does not have")]
    UnknownAxis {
        what: String,
        axis: String,
        mesh: String,
    },
    #[error("{what}: sharding uses mesh axis {axis:?} more than once")]
    RepeatedAxis { what: String, axis: String },
    #[error("{what}: partition spec has {spec_rank} dimensions, the tensor has {rank}")]
    SpecRank {
        what: String,
        spec_rank: usize,
        rank: usize,
    },
    #[error("parameter {param} ({name}) is donated to output {output}: {reason}")]
    BadAlias {
        param: usize,
        name: String,
        output: usize,
        reason: String,
    },
    #[error("node {node} ({op}): {message}")]
    Malformed {
        node: usize,
        op: &'static str,
        message: String,
    },
    #[error("output {output} refers to node {node}, which does not exist")]
    BadOutput { output: usize, node: usize },
}

/// The number of SPMD partitions (devices) a function runs on: the mesh's device count,
/// 1 without a mesh. This is `mhlo.num_partitions` and the runtime's compile option.
pub fn num_partitions(f: &Function) -> i64 {
    f.mesh.as_ref().map_or(1, |m| m.device_count())
}

/// Emits `f` as a StableHLO module whose entry function is `@main`.
///
/// A function without a mesh is a single-device program: its sharding annotations
/// (parameters, outputs, constraints) are dropped, so the same model code builds for one
/// device. With a mesh, every annotation is checked against it.
///
/// ```
/// use hlo::{to_stablehlo, Builder, DType, EmitOptions, Shape};
/// let b = Builder::new("double");
/// let x = b.parameter("x", Shape::new(DType::F32, [3]));
/// let f = b.build(&[&x.add(&x)]).unwrap();
/// let text = to_stablehlo(&f, &EmitOptions::default()).unwrap();
/// assert!(text.contains("%1 = stablehlo.add %x, %x : tensor<3xf32>"));
/// ```
pub fn to_stablehlo(f: &Function, opts: &EmitOptions) -> Result<String, EmitError> {
    Emitter::new(f, opts)?.run()
}

/// Hands out unique, valid MLIR value names.
#[derive(Default)]
struct Namer {
    used: HashSet<String>,
}

impl Namer {
    /// A fresh name (without `%`) based on `base`: sanitized to MLIR's identifier
    /// characters and made unique by a `_N` suffix.
    fn fresh(&mut self, base: &str, node: usize) -> String {
        let mut name: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_$.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // Names that start with a digit must be all digits in MLIR; ours get a prefix
        // (pure numbers are reserved for unnamed nodes).
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            name.insert(0, '_');
        }
        if self.used.insert(name.clone()) {
            return name;
        }
        let mut candidate = format!("{name}_{node}");
        let mut k = 1;
        while !self.used.insert(candidate.clone()) {
            candidate = format!("{name}_{node}_{k}");
            k += 1;
        }
        candidate
    }
}

/// Emission state for one function.
struct Emitter<'a> {
    f: &'a Function,
    opts: &'a EmitOptions,
    /// The mesh shardings refer to; `None` drops every sharding annotation.
    mesh: Option<&'a Mesh>,
    namer: Namer,
    /// For each node and output, how later ops refer to it (`%x`, `%5`, `%7#1`); empty for
    /// nodes not emitted.
    refs: Vec<Vec<String>>,
    /// Names of the function arguments, by parameter index.
    arg_names: Vec<String>,
    /// For each node, the name of the first named output it produces (a fallback name).
    output_names: Vec<Option<String>>,
    live: Vec<bool>,
    body: String,
    /// Leading spaces of each emitted line (deeper inside a while loop's regions).
    indent: String,
    /// Names unnamed values `{prefix}{node}` inside a region, so that they cannot clash
    /// with the enclosing function's numbered values (regions see outer names in MLIR).
    /// None at the top level, where unnamed values are plain numbers.
    prefix: Option<String>,
}

impl<'a> Emitter<'a> {
    fn new(f: &'a Function, opts: &'a EmitOptions) -> Result<Emitter<'a>, EmitError> {
        for (i, o) in f.outputs.iter().enumerate() {
            let ok = f
                .nodes
                .get(o.value.node)
                .is_some_and(|n| o.value.output < n.outputs.len());
            if !ok {
                return Err(EmitError::BadOutput {
                    output: i,
                    node: o.value.node,
                });
            }
        }
        let mut namer = Namer::default();
        let arg_names = f
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| namer.fresh(&p.name, i))
            .collect();
        let mut output_names = vec![None; f.nodes.len()];
        for o in f.outputs.iter().rev() {
            if o.name.is_some() {
                output_names[o.value.node] = o.name.clone();
            }
        }
        Ok(Emitter {
            output_names,
            f,
            opts,
            mesh: f.mesh.as_ref(),
            namer,
            refs: vec![Vec::new(); f.nodes.len()],
            arg_names,
            live: f.live_nodes(),
            body: String::new(),
            indent: "    ".to_string(),
            prefix: None,
        })
    }

    fn run(mut self) -> Result<String, EmitError> {
        let signature = self.signature()?;
        self.nodes()?;
        let results: Vec<String> = self.f.outputs.iter().map(|o| self.value(o.value)).collect();
        let types: Vec<String> = self
            .f
            .output_shapes()
            .iter()
            .map(|s| s.mlir_type())
            .collect();
        if results.is_empty() {
            self.body.push_str("    return\n");
        } else {
            writeln!(
                self.body,
                "    return {} : {}",
                results.join(", "),
                types.join(", ")
            )
            .expect("writing to a String");
        }

        let mut out = String::new();
        writeln!(
            out,
            "module @{} attributes {{mhlo.num_partitions = {} : i32, mhlo.num_replicas = 1 : i32}} {{",
            module_symbol(&self.f.name),
            num_partitions(self.f)
        )
        .expect("writing to a String");
        if let (Some(mesh), Partitioner::Shardy) = (self.mesh, self.opts.partitioner) {
            writeln!(out, "  {}", sharding::shardy_mesh(mesh)).expect("writing to a String");
        }
        writeln!(out, "  {signature} {{").expect("writing to a String");
        out.push_str(&self.body);
        out.push_str("  }\n}\n");
        Ok(out)
    }

    /// Emits every live node into the body.
    fn nodes(&mut self) -> Result<(), EmitError> {
        for id in 0..self.f.nodes.len() {
            if self.live[id] {
                self.node(id)?;
            }
        }
        Ok(())
    }

    /// The text of one region of the while loop at node `owner`: `sub` becomes a block
    /// whose arguments are its parameters, ending in `stablehlo.return` of its outputs.
    /// Names come from this emitter's namer, so they are unique in the whole module.
    fn region(&mut self, sub: &'a Function, owner: usize) -> Result<String, EmitError> {
        let mut inner = Emitter::new(sub, self.opts)?;
        inner.namer = std::mem::take(&mut self.namer);
        inner.arg_names = sub
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| inner.namer.fresh(&p.name, i))
            .collect();
        inner.mesh = self.mesh;
        inner.indent = format!("{}    ", self.indent);
        inner.prefix = Some(format!("{}w{owner}_", self.prefix.as_deref().unwrap_or("")));
        let emitted = inner.nodes();
        let results: Vec<String> = sub.outputs.iter().map(|o| inner.value(o.value)).collect();
        self.namer = std::mem::take(&mut inner.namer);
        emitted?;
        let args: Vec<String> = sub
            .params
            .iter()
            .zip(&inner.arg_names)
            .map(|(p, n)| format!("%{n}: {}", p.shape.mlir_type()))
            .collect();
        let types: Vec<String> = sub.output_shapes().iter().map(|s| s.mlir_type()).collect();
        Ok(format!(
            "{}  ^bb0({}):\n{}{}stablehlo.return {} : {}\n",
            self.indent,
            args.join(", "),
            inner.body,
            inner.indent,
            results.join(", "),
            types.join(", ")
        ))
    }

    /// `func.func public @main(%x: tensor<..> {attrs}, ...) -> (tensor<..> {attrs}, ...)`.
    fn signature(&mut self) -> Result<String, EmitError> {
        let f = self.f;
        let mut args = Vec::with_capacity(f.params.len());
        for (i, p) in f.params.iter().enumerate() {
            let mut attrs = Vec::new();
            let what = format!("parameter {i} ({})", p.name);
            if let Some(spec) = &p.sharding {
                attrs.extend(self.sharding_attr(spec, p.shape.rank(), &what)?);
            }
            if let Some(out) = p.alias_output {
                let reason = match f.outputs.get(out) {
                    None => Some(format!("the function has {} outputs", f.outputs.len())),
                    Some(o) if f.value_shape(o.value) != &p.shape => Some(format!(
                        "types differ ({} vs {})",
                        p.shape,
                        f.value_shape(o.value)
                    )),
                    Some(_) => None,
                };
                if let Some(reason) = reason {
                    return Err(EmitError::BadAlias {
                        param: i,
                        name: p.name.clone(),
                        output: out,
                        reason,
                    });
                }
                attrs.push(format!("tf.aliasing_output = {out} : i32"));
            }
            args.push(format!(
                "%{}: {}{}",
                self.arg_names[i],
                p.shape.mlir_type(),
                attr_dict(&attrs)
            ));
        }
        let mut results = Vec::with_capacity(f.outputs.len());
        for (i, o) in f.outputs.iter().enumerate() {
            let shape = f.value_shape(o.value);
            let mut attrs = Vec::new();
            if let Some(spec) = &o.sharding {
                let what = match &o.name {
                    Some(n) => format!("output {i} ({n})"),
                    None => format!("output {i}"),
                };
                attrs.extend(self.sharding_attr(spec, shape.rank(), &what)?);
            }
            results.push(format!("{}{}", shape.mlir_type(), attr_dict(&attrs)));
        }
        Ok(format!(
            "func.func public @main({}) -> ({})",
            args.join(", "),
            results.join(", ")
        ))
    }

    /// The argument/result attribute for a sharding, or nothing without a mesh.
    fn sharding_attr(
        &self,
        spec: &PartitionSpec,
        rank: usize,
        what: &str,
    ) -> Result<Option<String>, EmitError> {
        let Some(mesh) = self.mesh else {
            return Ok(None);
        };
        sharding::validate(spec, mesh, rank, what)?;
        Ok(Some(match self.opts.partitioner {
            Partitioner::Shardy => sharding::shardy_attr(spec),
            Partitioner::Gspmd => sharding::gspmd_attr(spec, mesh),
        }))
    }

    /// How to refer to an already emitted value.
    fn value(&self, v: ValueRef) -> String {
        self.refs[v.node][v.output].clone()
    }

    /// Names the results of node `id` and returns the text to put left of `=`
    /// (`%x` or `%x:2`).
    fn define(&mut self, id: usize) -> String {
        let node = &self.f.nodes[id];
        let base = node
            .name
            .clone()
            .or_else(|| self.output_names[id].clone())
            .map(|n| self.namer.fresh(&n, id));
        let base = match (base, &self.prefix) {
            (Some(b), _) => b,
            // Unnamed values are numbered by node; numbers never clash with names.
            (None, None) => id.to_string(),
            (None, Some(p)) => self.namer.fresh(&format!("{p}{id}"), id),
        };
        let n = node.outputs.len();
        if n == 1 {
            self.refs[id] = vec![format!("%{base}")];
            format!("%{base}")
        } else {
            self.refs[id] = (0..n).map(|k| format!("%{base}#{k}")).collect();
            format!("%{base}:{n}")
        }
    }

    /// Emits one live node.
    fn node(&mut self, id: usize) -> Result<(), EmitError> {
        let node = &self.f.nodes[id];
        let malformed = |message: String| EmitError::Malformed {
            node: id,
            op: node.op.name(),
            message,
        };
        for v in &node.operands {
            if v.node >= id {
                return Err(malformed(format!(
                    "operand refers to node {}, which does not come before it",
                    v.node
                )));
            }
        }
        match &node.op {
            // Arguments are named in the signature; the node just refers to one.
            Op::Parameter { index } => {
                let name = self.arg_names.get(*index).ok_or_else(|| {
                    malformed(format!(
                        "the function has {} parameters",
                        self.f.params.len()
                    ))
                })?;
                self.refs[id] = vec![format!("%{name}")];
                Ok(())
            }
            // Identity in the emitted program; it only matters to autodiff.
            Op::StopGradient => {
                let v = node
                    .operands
                    .first()
                    .ok_or_else(|| malformed("needs one operand".into()))?;
                self.refs[id] = vec![self.value(*v)];
                Ok(())
            }
            // Without a mesh there is nothing to constrain.
            Op::ShardingConstraint { .. } if self.mesh.is_none() => {
                let v = node
                    .operands
                    .first()
                    .ok_or_else(|| malformed("needs one operand".into()))?;
                self.refs[id] = vec![self.value(*v)];
                Ok(())
            }
            Op::Composite {
                name,
                decomposition,
                ..
            } => match self.opts.composite_calls.get(name) {
                Some(target) => ops::custom_call(self, id, target).map_err(malformed),
                None => self.inline(decomposition, id),
            },
            _ => ops::emit(self, id).map_err(malformed),
        }
    }

    /// Emits `sub` (the decomposition of the composite at node `owner`) in place, its
    /// parameters bound to the composite's operands; the composite's results are its
    /// outputs.
    fn inline(&mut self, sub: &'a Function, owner: usize) -> Result<(), EmitError> {
        let args: Vec<String> = self.f.nodes[owner]
            .operands
            .iter()
            .map(|v| self.value(*v).trim_start_matches('%').to_string())
            .collect();
        let mut inner = Emitter::new(sub, self.opts)?;
        inner.namer = std::mem::take(&mut self.namer);
        inner.arg_names = args;
        inner.mesh = self.mesh;
        inner.indent = self.indent.clone();
        inner.prefix = Some(format!("{}c{owner}_", self.prefix.as_deref().unwrap_or("")));
        let emitted = inner.nodes();
        let results: Vec<String> = sub.outputs.iter().map(|o| inner.value(o.value)).collect();
        self.namer = std::mem::take(&mut inner.namer);
        emitted?;
        self.body.push_str(&inner.body);
        self.refs[owner] = results;
        Ok(())
    }
}

/// `{a, b}` or nothing.
fn attr_dict(attrs: &[String]) -> String {
    if attrs.is_empty() {
        String::new()
    } else {
        format!(" {{{}}}", attrs.join(", "))
    }
}

/// The module's symbol: the function name if it is a plain identifier, else quoted.
fn module_symbol(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c));
    if plain {
        name.to_string()
    } else if name.is_empty() {
        "main".to_string()
    } else {
        sharding::quote(name)
    }
}
