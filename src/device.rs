//! The link between the model code and a PJRT device: compile an `hlo::Function` into a
//! [`Program`], move literals to and from devices, and run programs on one device or on a
//! mesh of devices (splitting and reassembling shards on the host).

use crate::model::expert_mlp::{EXPERT_MLP, EXPERT_MLP_GRAD};
use crate::model::head_logsumexp::{HEAD_LOGSUMEXP, HEAD_LOGSUMEXP_GRAD};
use crate::model::masked_attention::{MASKED_ATTENTION, MASKED_ATTENTION_GRAD};
use crate::model::matmul::{MATMUL_NT, MATVEC_NT};
use crate::model::switch_ffn::CHOSEN_EXPERT_MLP;
use anyhow::{anyhow, bail, Context, Result};
use hlo::emit::{to_stablehlo, EmitOptions};
use hlo::{Function, Literal, Mesh, PartitionSpec};
use runtime::{Backend, Buffer, Client, ClientOptions, CompileOptions, Executable, PluginRequest};
use std::sync::{Arc, OnceLock};

/// An open PJRT client and how it was chosen.
pub struct Device {
    client: Arc<Client>,
    /// The discovery report ("no TPU device found; ...; using CPU plugin ...").
    pub report: String,
}

impl Device {
    /// Opens the plugin chosen by `plugin` (a path or `cpu|cuda|tpu`; None: the
    /// `GPTSAN_PJRT_PLUGIN` variable, then discovery) with `cpu_devices` virtual CPU devices.
    pub fn open(plugin: Option<&str>, cpu_devices: Option<i64>) -> Result<Device> {
        let request = PluginRequest::from_arg_or_env(plugin);
        let options = ClientOptions {
            cpu_device_count: cpu_devices,
            ..ClientOptions::default()
        };
        let (client, discovery) = Client::open(&request, &options)?;
        let client = if std::env::var_os("GPTSAN_NO_EXECUTABLE_CACHE").is_some() {
            client
        } else {
            client.with_cache(runtime::ExecutableCache::in_default_location())
        };
        Ok(Device {
            report: discovery.explain(),
            client: Arc::new(client),
        })
    }

    /// One process-wide device (default plugin, 4 CPU devices), for tests and tools that
    /// run many programs.
    pub fn shared() -> Result<&'static Device> {
        static SHARED: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Device::open(None, Some(4)).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn device_count(&self) -> usize {
        self.client.device_count()
    }

    pub fn describe(&self) -> String {
        self.client.describe()
    }

    /// For the time the model runs (training, forward passes, decoding): on the CPU
    /// plugin, keeps the cores awake while the returned guard lives
    /// ([`runtime::cores_awake`]: XLA's parallel kernels otherwise wait for a halted core
    /// to wake up). None on other plugins.
    pub fn keep_cores_awake(&self) -> Option<runtime::CoresAwake> {
        (self.client.platform_name() == "cpu").then(runtime::CoresAwake::start)
    }

    /// What [`Device::keep_cores_awake`] does here, in words (for benchmark reports).
    pub fn wait_policy(&self) -> String {
        if self.client.platform_name() == "cpu" {
            runtime::WaitPolicy::of_this_process().describe()
        } else {
            format!("not used on {}", self.client.platform_name())
        }
    }

    /// Programs this device's client has loaded from the executable cache so far (0
    /// without a cache).
    pub fn cache_hits(&self) -> u64 {
        self.client.cache().map_or(0, |c| c.hits())
    }

    /// Emits (Shardy annotations) and compiles `f` for one device, or for its mesh.
    pub fn compile(&self, f: &Function) -> Result<Program> {
        self.compile_with(f, &self.emit_options(f))
    }

    /// Shardy annotations, and our kernels where the client has them: bf16 products on
    /// AMX ([`runtime::Client::bf16_dot_call`]), the masked attention composites
    /// ([`runtime::Client::masked_attention_calls`]), the experts over their filled slots
    /// ([`runtime::Client::expert_mlp_calls`]), the head loss's log-sum-exp and its gradient
    /// ([`runtime::Client::head_logsumexp_calls`]), the head's f32 logits
    /// ([`runtime::Client::f32_matmul_call`]), decode steps' products
    /// ([`runtime::Client::f32_matvec_call`]) and the chosen-expert MLP
    /// ([`runtime::Client::chosen_expert_call`]); on one device only, as a custom
    /// call has no rule for splitting it over a mesh.
    pub fn emit_options(&self, f: &Function) -> EmitOptions {
        let one_device = f.mesh.as_ref().is_none_or(|m| m.device_count() == 1);
        let mut opts = EmitOptions::default();
        if one_device {
            opts.bf16_dot_call = self.client.bf16_dot_call().map(String::from);
            if let Some([forward, grad]) = self.client.masked_attention_calls() {
                let calls = &mut opts.composite_calls;
                calls.insert(MASKED_ATTENTION.to_string(), forward.to_string());
                calls.insert(MASKED_ATTENTION_GRAD.to_string(), grad.to_string());
            }
            if let Some([forward, grad]) = self.client.expert_mlp_calls() {
                let calls = &mut opts.composite_calls;
                calls.insert(EXPERT_MLP.to_string(), forward.to_string());
                calls.insert(EXPERT_MLP_GRAD.to_string(), grad.to_string());
            }
            if let Some([forward, grad]) = self.client.head_logsumexp_calls() {
                let calls = &mut opts.composite_calls;
                calls.insert(HEAD_LOGSUMEXP.to_string(), forward.to_string());
                calls.insert(HEAD_LOGSUMEXP_GRAD.to_string(), grad.to_string());
            }
            if let Some(target) = self.client.f32_matmul_call() {
                let calls = &mut opts.composite_calls;
                calls.insert(MATMUL_NT.to_string(), target.to_string());
            }
            if let Some(target) = self.client.f32_matvec_call() {
                let calls = &mut opts.composite_calls;
                calls.insert(MATVEC_NT.to_string(), target.to_string());
            }
            if let Some(target) = self.client.chosen_expert_call() {
                let calls = &mut opts.composite_calls;
                calls.insert(CHOSEN_EXPERT_MLP.to_string(), target.to_string());
            }
        }
        opts
    }

    /// Emits `f` with the given partitioner's annotations and compiles it.
    pub fn compile_with(&self, f: &Function, emit: &EmitOptions) -> Result<Program> {
        let text = to_stablehlo(f, emit).with_context(|| format!("emitting {}", f.name))?;
        let shardy = emit.partitioner == hlo::emit::Partitioner::Shardy;
        self.compile_text(f, text, shardy)
    }

    /// Compiles already-emitted text for `f`; `shardy` says which annotations it carries.
    pub fn compile_text(&self, f: &Function, text: String, shardy: bool) -> Result<Program> {
        let partitions = f.mesh.as_ref().map(|m| m.device_count()).unwrap_or(1);
        if partitions as usize > self.device_count() {
            bail!(
                "program {} needs {partitions} devices, the client has {}",
                f.name,
                self.device_count()
            );
        }
        let options = if partitions > 1 {
            let mut o = CompileOptions::spmd(partitions);
            o.use_shardy_partitioner = shardy;
            o.device_assignment = Some(vec![(0..partitions).collect()]);
            o
        } else {
            CompileOptions::default()
        };
        let started = std::time::Instant::now();
        // Through the Backend trait: it consults the executable cache.
        let exe = Backend::compile(&*self.client, &text, &options)
            .with_context(|| format!("compiling {}", f.name))?;
        let exe = match &f.mesh {
            Some(m) if partitions > 1 => exe.with_label(format!("program {} on mesh {m}", f.name)),
            _ => exe,
        };
        tracing::info!(program = %f.name, ms = started.elapsed().as_millis() as u64, "compiled");
        Ok(Program {
            exe,
            function: f.clone(),
            text,
            client: self.client.clone(),
        })
    }

    pub fn upload(&self, lit: &Literal, device: usize) -> Result<Buffer> {
        Ok(self.client.upload(lit, device)?)
    }
}

/// A compiled program with its signature.
pub struct Program {
    exe: Executable,
    pub function: Function,
    /// The StableHLO text it was compiled from.
    pub text: String,
    client: Arc<Client>,
}

impl Program {
    pub fn executable(&self) -> &Executable {
        &self.exe
    }

    /// Index of the output called `name`.
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.function
            .outputs
            .iter()
            .position(|o| o.name.as_deref() == Some(name))
    }

    pub fn output_names(&self) -> Vec<String> {
        self.function
            .outputs
            .iter()
            .map(|o| o.name.clone().unwrap_or_default())
            .collect()
    }

    fn check_args(&self, shapes: &[&hlo::Shape]) -> Result<()> {
        let params = &self.function.params;
        if shapes.len() != params.len() {
            bail!(
                "{} takes {} arguments, got {}",
                self.function.name,
                params.len(),
                shapes.len()
            );
        }
        for (p, s) in params.iter().zip(shapes) {
            if &p.shape != *s {
                bail!(
                    "{}: argument {} must be {}, got {}",
                    self.function.name,
                    p.name,
                    p.shape,
                    s
                );
            }
        }
        Ok(())
    }

    /// The devices the program runs on: its mesh, or one device.
    fn device_count(&self) -> usize {
        self.function
            .mesh
            .as_ref()
            .map_or(1, |m| m.device_count() as usize)
    }

    /// Argument `arg`'s layout over the mesh (replicated when it has none).
    fn arg_spec(&self, arg: usize) -> PartitionSpec {
        let p = &self.function.params[arg];
        p.sharding
            .clone()
            .unwrap_or_else(|| PartitionSpec::replicated(p.shape.rank()))
    }

    /// Uploads `lit` as argument `arg`: one piece per device, split as the program lays
    /// that argument out (the whole value on a single device).
    pub fn upload_arg(&self, arg: usize, lit: &Literal) -> Result<Vec<Buffer>> {
        let Some(mesh) = self
            .function
            .mesh
            .as_ref()
            .filter(|_| self.device_count() > 1)
        else {
            return Ok(vec![self.client.upload(lit, 0)?]);
        };
        let spec = self.arg_spec(arg);
        (0..self.device_count())
            .map(|d| Ok(self.client.upload(&shard_of(lit, &spec, mesh, d)?, d)?))
            .collect()
    }

    /// Downloads the pieces of argument `arg` (e.g. donated-and-updated state) as one value.
    pub fn download_arg(&self, arg: usize, shards: &[&Buffer]) -> Result<Literal> {
        let lits: Vec<Literal> = shards
            .iter()
            .map(|b| b.to_literal())
            .collect::<runtime::Result<_>>()?;
        match self
            .function
            .mesh
            .as_ref()
            .filter(|_| self.device_count() > 1)
        {
            Some(mesh) => {
                let shape = self.function.params[arg].shape.clone();
                assemble(&lits, &shape, &self.arg_spec(arg), mesh)
            }
            None => lits
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no buffer for argument {arg}")),
        }
    }

    /// Runs with one argument list per device (see [`Program::upload_arg`]); returns one
    /// result list per device.
    pub fn run_per_device(&self, args: &[Vec<&Buffer>]) -> Result<Vec<Vec<Buffer>>> {
        Ok(self.exe.execute(args)?)
    }

    /// Runs on one device with device-resident arguments.
    pub fn run(&self, args: &[&Buffer]) -> Result<Vec<Buffer>> {
        let mut out = self.exe.execute(&[args.to_vec()])?;
        out.pop()
            .ok_or_else(|| anyhow!("{} returned no results", self.function.name))
    }

    /// Uploads host literals, runs, and downloads every result (single device).
    pub fn run_literals(&self, args: &[Literal]) -> Result<Vec<Literal>> {
        self.check_args(&args.iter().map(|a| a.shape()).collect::<Vec<_>>())?;
        if self
            .function
            .mesh
            .as_ref()
            .is_some_and(|m| m.device_count() > 1)
        {
            return self.run_sharded(args);
        }
        let bufs: Vec<Buffer> = args
            .iter()
            .map(|a| self.client.upload(a, 0))
            .collect::<runtime::Result<_>>()?;
        let refs: Vec<&Buffer> = bufs.iter().collect();
        self.run(&refs)?
            .iter()
            .map(|b| Ok(b.to_literal()?))
            .collect()
    }

    /// Splits every argument over the mesh, runs on all devices, and reassembles results.
    pub fn run_sharded(&self, args: &[Literal]) -> Result<Vec<Literal>> {
        let mesh = self
            .function
            .mesh
            .clone()
            .ok_or_else(|| anyhow!("program has no mesh"))?;
        let n = mesh.device_count() as usize;
        let mut per_device: Vec<Vec<Buffer>> = (0..n).map(|_| Vec::new()).collect();
        for (arg, p) in args.iter().zip(&self.function.params) {
            let spec = p
                .sharding
                .clone()
                .unwrap_or_else(|| PartitionSpec::replicated(arg.dims().len()));
            for (d, bufs) in per_device.iter_mut().enumerate() {
                let shard = shard_of(arg, &spec, &mesh, d)?;
                bufs.push(self.client.upload(&shard, d)?);
            }
        }
        let lists: Vec<Vec<&Buffer>> = per_device.iter().map(|v| v.iter().collect()).collect();
        let results = self.exe.execute(&lists)?;
        let mut out = Vec::new();
        for (i, o) in self.function.outputs.iter().enumerate() {
            let shape = self.function.value_shape(o.value).clone();
            let spec = o
                .sharding
                .clone()
                .unwrap_or_else(|| PartitionSpec::replicated(shape.rank()));
            let shards: Vec<Literal> = results
                .iter()
                .map(|r| r[i].to_literal())
                .collect::<runtime::Result<_>>()?;
            out.push(assemble(&shards, &shape, &spec, &mesh)?);
        }
        Ok(out)
    }
}

/// Coordinates of device `d` on the mesh (row-major over the axes).
fn mesh_coords(mesh: &Mesh, mut d: usize) -> Vec<i64> {
    let mut coords = vec![0; mesh.axes.len()];
    for (i, (_, size)) in mesh.axes.iter().enumerate().rev() {
        coords[i] = (d % *size as usize) as i64;
        d /= *size as usize;
    }
    coords
}

/// For each tensor dimension: (number of pieces, index of device `d`'s piece).
fn tiling(dims: &[i64], spec: &PartitionSpec, mesh: &Mesh, d: usize) -> Result<Vec<(i64, i64)>> {
    let coords = mesh_coords(mesh, d);
    let mut out = Vec::with_capacity(dims.len());
    for (i, axes) in spec.dims.iter().enumerate() {
        let (mut pieces, mut index) = (1i64, 0i64);
        for a in axes {
            let pos = mesh
                .axes
                .iter()
                .position(|(n, _)| n == a)
                .ok_or_else(|| anyhow!("mesh has no axis {a}"))?;
            let size = mesh.axes[pos].1;
            index = index * size + coords[pos];
            pieces *= size;
        }
        if dims[i] % pieces != 0 {
            bail!(
                "dimension {i} of size {} does not split into {pieces} pieces",
                dims[i]
            );
        }
        out.push((pieces, index));
    }
    Ok(out)
}

/// Device `d`'s piece of `lit`.
pub fn shard_of(lit: &Literal, spec: &PartitionSpec, mesh: &Mesh, d: usize) -> Result<Literal> {
    let dims = lit.dims().to_vec();
    let tiles = tiling(&dims, spec, mesh, d)?;
    if tiles.iter().all(|(p, _)| *p == 1) {
        return Ok(lit.clone());
    }
    let local: Vec<i64> = dims.iter().zip(&tiles).map(|(s, (p, _))| s / p).collect();
    let start: Vec<i64> = local.iter().zip(&tiles).map(|(l, (_, i))| l * i).collect();
    let w = lit.dtype().size_in_bytes();
    let mut bytes = Vec::with_capacity(local.iter().product::<i64>() as usize * w);
    copy_block(lit.bytes(), &dims, &start, &local, w, &mut |chunk| {
        bytes.extend_from_slice(chunk)
    });
    Ok(Literal::from_bytes(lit.shape().with_dims(local), bytes)?)
}

/// Visits the rows of the block `start..start+size` of a row-major tensor.
fn copy_block(
    src: &[u8],
    dims: &[i64],
    start: &[i64],
    size: &[i64],
    w: usize,
    emit: &mut dyn FnMut(&[u8]),
) {
    let r = dims.len();
    if r == 0 {
        emit(src);
        return;
    }
    let strides: Vec<usize> = (0..r)
        .map(|i| dims[i + 1..].iter().product::<i64>() as usize * w)
        .collect();
    let row = size[r - 1] as usize * w;
    let outer: Vec<i64> = size[..r - 1].to_vec();
    let count: i64 = outer.iter().product();
    let mut idx = vec![0i64; r - 1];
    for _ in 0..count {
        let mut off = start[r - 1] as usize * w;
        for k in 0..r - 1 {
            off += (start[k] + idx[k]) as usize * strides[k];
        }
        emit(&src[off..off + row]);
        for k in (0..r - 1).rev() {
            idx[k] += 1;
            if idx[k] < outer[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Puts per-device shards back into one tensor (replicated dimensions taken from the
/// first device that holds each block).
pub fn assemble(
    shards: &[Literal],
    shape: &hlo::Shape,
    spec: &PartitionSpec,
    mesh: &Mesh,
) -> Result<Literal> {
    let dims = shape.dims.clone();
    if dims.is_empty() || spec.dims.iter().all(|a| a.is_empty()) {
        return Ok(shards[0].clone());
    }
    let w = shape.dtype.size_in_bytes();
    let mut out = vec![0u8; shape.size_in_bytes()];
    let strides: Vec<usize> = (0..dims.len())
        .map(|i| dims[i + 1..].iter().product::<i64>() as usize * w)
        .collect();
    for (d, shard) in shards.iter().enumerate() {
        let tiles = tiling(&dims, spec, mesh, d)?;
        let local: Vec<i64> = dims.iter().zip(&tiles).map(|(s, (p, _))| s / p).collect();
        let start: Vec<i64> = local.iter().zip(&tiles).map(|(l, (_, i))| l * i).collect();
        // Write the shard's rows into their place.
        let r = dims.len();
        let row = local[r - 1] as usize * w;
        let count: i64 = local[..r - 1].iter().product();
        let mut idx = vec![0i64; r - 1];
        for c in 0..count as usize {
            let mut off = start[r - 1] as usize * w;
            for k in 0..r - 1 {
                off += (start[k] + idx[k]) as usize * strides[k];
            }
            out[off..off + row].copy_from_slice(&shard.bytes()[c * row..(c + 1) * row]);
            for k in (0..r - 1).rev() {
                idx[k] += 1;
                if idx[k] < local[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
    }
    Ok(Literal::from_bytes(shape.clone(), out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_and_reassembles_over_a_2x2_mesh() {
        let mesh = Mesh::new(&[("data", 2), ("model", 2)]);
        let vals: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let lit = Literal::from_slice(&[4, 6], &vals).unwrap();
        let spec = PartitionSpec::new(&[Some("data"), Some("model")]);
        let shards: Vec<Literal> = (0..4)
            .map(|d| shard_of(&lit, &spec, &mesh, d).unwrap())
            .collect();
        assert_eq!(shards[1].dims(), &[2, 3]);
        // Device 1 = (data 0, model 1): rows 0-1, columns 3-5.
        assert_eq!(
            shards[1].to_vec::<f32>().unwrap(),
            vec![3.0, 4.0, 5.0, 9.0, 10.0, 11.0]
        );
        let back = assemble(&shards, lit.shape(), &spec, &mesh).unwrap();
        assert_eq!(back, lit);
        let rows_only = PartitionSpec::new(&[None, Some("model")]);
        let s2: Vec<Literal> = (0..4)
            .map(|d| shard_of(&lit, &rows_only, &mesh, d).unwrap())
            .collect();
        assert_eq!(assemble(&s2, lit.shape(), &rows_only, &mesh).unwrap(), lit);
    }
}
