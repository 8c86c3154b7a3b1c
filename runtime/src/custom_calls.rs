//! Our own CPU kernels inside XLA programs: typed XLA FFI handlers, registered with the
//! plugin through its PJRT FFI extension, that a program reaches with
//! `stablehlo.custom_call @name(...) {api_version = 4 : i32}`.
//!
//! The kernels:
//! - [`BF16_DOT`]: bf16 products on AMX tiles ([`crate::amx`]), which XLA CPU would
//!   compute in f32;
//! - [`MASKED_ATTENTION`] (and its gradient): f32 `softmax(q k^T + mask) v` in one pass
//!   per group of queries ([`crate::masked_attention`]), which XLA CPU computes in
//!   several passes over the scores;
//! - [`CHOSEN_EXPERT_MLP`]: a decode step's tokens through their chosen experts' MLPs
//!   ([`crate::chosen_expert`]), which XLA CPU computes as a gather fused into a slow
//!   loop kernel;
//! - [`EXPERT_MLP`] (and its gradient): the experts' MLPs over their filled slots only
//!   ([`crate::expert_mlp`]);
//! - [`HEAD_LOGSUMEXP`] (and its gradient): the tied head's per-token log-sum-exp, whose
//!   gradient never writes the logits' cotangent ([`crate::head_logsumexp`]);
//! - [`F32_MATMUL_NT`]: the head's f32 logits ([`crate::gemm`]);
//! - [`F32_MATVEC_NT`]: a decode step's f32 products ([`crate::matvec`]).
//!
//! The handlers decode XLA's call frame (the C structs of `xla/ffi/api/c_api.h`,
//! declared below) and run in the calling XLA thread, which starts one more thread per
//! further core for the work.

use crate::amx;
use crate::api::Api;
use crate::chosen_expert;
use crate::error::{Error, Result};
use crate::expert_mlp;
use crate::ffi::{PJRT_Error, PJRT_Extension_Base};
use crate::gemm;
use crate::head_logsumexp;
use crate::masked_attention;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::OnceLock;

/// Prefix of the bf16 product targets; the suffix gives the operands' storage:
/// `_nn` `[m, k] . [k, n]`, `_tn` left stored `[k, m]`, `_nt` right stored `[n, k]`, `_tt`
/// both. Operands and result are bf16, rank 2 or rank 3 with a leading batch dimension.
pub const BF16_DOT: &str = "gptsan_bf16_dot";

/// Registers our handlers with the plugin once per process, where they can run (a CPU
/// plugin with the FFI extension, a CPU with AMX bf16). Returns whether programs may use
/// [`BF16_DOT`]; a failure is logged and leaves XLA's own dots in use.
pub fn bf16_dot_available(api: &'static Api) -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let names = ["nn", "tn", "nt", "tt"].map(|suffix| format!("{BF16_DOT}_{suffix}"));
    let handlers: [(&str, Handler); 4] = [
        (&names[0], bf16_dot::<false, false>),
        (&names[1], bf16_dot::<true, false>),
        (&names[2], bf16_dot::<false, true>),
        (&names[3], bf16_dot::<true, true>),
    ];
    register_once(
        &REGISTERED,
        api,
        amx::available,
        &handlers,
        "bf16 products stay with XLA",
    )
}

/// Registers `handlers` for the CPU ("Host") the first time it is asked, if `can_run`;
/// afterwards returns the first answer. False (logged with `fallback`) if a
/// registration fails: programs then keep XLA's ops.
fn register_once(
    registered: &OnceLock<bool>,
    api: &'static Api,
    can_run: fn() -> bool,
    handlers: &[(&str, Handler)],
    fallback: &str,
) -> bool {
    *registered.get_or_init(|| {
        if !can_run() {
            return false;
        }
        for (name, handler) in handlers {
            if let Err(e) = register(api, name, "Host", *handler) {
                tracing::warn!(error = %e, "{fallback}");
                return false;
            }
        }
        true
    })
}

/// The masked attention kernel's target: operands `q [B, T, H, dh]`, `k` and `v
/// `[B, S, H, dh]`, `mask [B, T, S]` (added to the scores; at most
/// [`masked_attention::HIDDEN`] hides a key); results `softmax(q k^T + mask) v` per head,
/// `[B, T, H, dh]`, and optionally each row's score maximum and sum of exponentials,
/// `[B, T, H]` each (for [`MASKED_ATTENTION_GRAD`]). All f32.
pub const MASKED_ATTENTION: &str = "gptsan_masked_attention";

/// The gradient of [`MASKED_ATTENTION`]: operands `q`, `k`, `v`, `mask`, the result, its
/// two row statistics and the result's cotangent; results the cotangents of `q`, `k`
/// and `v`.
pub const MASKED_ATTENTION_GRAD: &str = "gptsan_masked_attention_grad";

/// Registers [`MASKED_ATTENTION`] and [`MASKED_ATTENTION_GRAD`] once per process where
/// they can run (a CPU plugin with the FFI extension, a CPU with AVX-512); whether
/// programs may call them.
pub fn masked_attention_available(api: &'static Api) -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let handlers: [(&str, Handler); 2] = [
        (MASKED_ATTENTION, masked_attention_call),
        (MASKED_ATTENTION_GRAD, masked_attention_grad_call),
    ];
    register_once(
        &REGISTERED,
        api,
        masked_attention::available,
        &handlers,
        "attention stays with XLA's ops",
    )
}

/// The chosen-expert MLP's target: operands `x [N, d]`, `expert [N]` s32, `kept [N]`,
/// `wi [E, f, d]`, `wo [E, d, f]`; result `relu(x wi[e]^T) wo[e]^T * kept` `[N, d]`; f32
/// but for `expert`.
pub const CHOSEN_EXPERT_MLP: &str = "gptsan_chosen_expert_mlp";

/// Registers [`CHOSEN_EXPERT_MLP`] once per process where it can run; whether programs
/// may call it.
pub fn chosen_expert_available(api: &'static Api) -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let handlers: [(&str, Handler); 1] = [(CHOSEN_EXPERT_MLP, chosen_expert_call)];
    register_once(
        &REGISTERED,
        api,
        chosen_expert::available,
        &handlers,
        "the experts of decode steps stay with XLA's ops",
    )
}

/// The experts' MLPs of a switch layer over their filled slots: operands `x [G, E, C, d]`,
/// `filled [G, E]` s32 (each expert's filled slots in a group: a prefix of its `C`),
/// `wi [E, f, d]`, `wo [E, d, f]`; results `relu(x wi^T) wo^T` `[G, E, C, d]` and the
/// hidden activations `relu(x wi^T)` `[G, E, C, f]` on filled slots (empty ones are left
/// unwritten); f32 but for `filled` ([`crate::expert_mlp`]).
pub const EXPERT_MLP: &str = "gptsan_expert_mlp";

/// The gradient of [`EXPERT_MLP`]: operands `x`, `filled`, `wi`, `wo`, the hidden
/// activations and the cotangent of the result; results the cotangents of `x`, `wi` and
/// `wo`.
pub const EXPERT_MLP_GRAD: &str = "gptsan_expert_mlp_grad";

/// Registers [`EXPERT_MLP`] and [`EXPERT_MLP_GRAD`] once per process where they can run;
/// whether programs may call them.
pub fn expert_mlp_available(api: &'static Api) -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let handlers: [(&str, Handler); 2] = [
        (EXPERT_MLP, expert_mlp_call),
        (EXPERT_MLP_GRAD, expert_mlp_grad_call),
    ];
    register_once(
        &REGISTERED,
        api,
        expert_mlp::available,
        &handlers,
        "the experts stay with XLA's products",
    )
}

/// An f32 product with the right operand stored transposed: operands `a [M, K]` and
/// `b [N, K]`, result `a b^T` `[M, N]` ([`crate::gemm::gemm_threads`]). XLA CPU's dot
/// library runs the tied head's `[tokens, d + 1] . [V, d + 1]^T` at about 250 GFLOP/s
/// on two cores, this about 320.
pub const F32_MATMUL_NT: &str = "gptsan_f32_matmul_nt";

/// Registers [`F32_MATMUL_NT`] once per process where it can run; whether programs may
/// call it.
pub fn f32_matmul_available(api: &'static Api) -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let handlers: [(&str, Handler); 1] = [(F32_MATMUL_NT, f32_matmul_nt_call)];
    register_once(
        &REGISTERED,
        api,
        gemm::available,
        &handlers,
        "f32 products stay with XLA's dots",
    )
}

/// The tied head's per-token log-sum-exp: operands `w [V, K]` and `h [N, K]`; results
/// `lse [N]` (each column's log-sum-exp of `w h^T`) and the logits `w h^T` `[V, N]` for
/// [`HEAD_LOGSUMEXP_GRAD`]; f32 ([`crate::head_logsumexp`]).
pub const HEAD_LOGSUMEXP: &str = "gptsan_head_logsumexp";

/// The gradient of [`HEAD_LOGSUMEXP`]: operands `w`, `h`, the logits, `lse` and the
/// cotangent of `lse`; results the cotangents of `w` and `h` ([`crate::head_logsumexp`]).
pub const HEAD_LOGSUMEXP_GRAD: &str = "gptsan_head_logsumexp_grad";

/// Registers [`HEAD_LOGSUMEXP`] and [`HEAD_LOGSUMEXP_GRAD`] once per process where they
/// can run; whether programs may call them.
pub fn head_logsumexp_available(api: &'static Api) -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let handlers: [(&str, Handler); 2] = [
        (HEAD_LOGSUMEXP, head_logsumexp_call),
        (HEAD_LOGSUMEXP_GRAD, head_logsumexp_grad_call),
    ];
    register_once(
        &REGISTERED,
        api,
        head_logsumexp::available,
        &handlers,
        "the head's loss stays with XLA's ops",
    )
}

/// A decode step's f32 product with the right operand stored transposed: operands
/// `x [1, K]` and `w [N, K]`, result `x w^T` `[1, N]` ([`crate::matvec`], on two cores
/// where XLA CPU runs the small ones on one).
pub const F32_MATVEC_NT: &str = "gptsan_f32_matvec_nt";

/// Registers [`F32_MATVEC_NT`] once per process where it can run; whether programs may
/// call it.
pub fn f32_matvec_available(api: &'static Api) -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let handlers: [(&str, Handler); 1] = [(F32_MATVEC_NT, f32_matvec_nt_call)];
    register_once(
        &REGISTERED,
        api,
        gemm::available,
        &handlers,
        "decode steps' products stay with XLA's dots",
    )
}

/// The cores a kernel may use, read once.
fn cores() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |t| t.get()))
}

const PJRT_EXTENSION_TYPE_FFI: c_int = 5;

#[repr(C)]
struct PjrtFfiExtension {
    base: PJRT_Extension_Base,
    type_id_register: *const c_void,
    user_data_add: *const c_void,
    register_handler: Option<unsafe extern "C" fn(*mut RegisterHandlerArgs) -> *mut PJRT_Error>,
}

#[repr(C)]
struct RegisterHandlerArgs {
    struct_size: usize,
    target_name: *const c_char,
    target_name_size: usize,
    handler: *const c_void,
    platform_name: *const c_char,
    platform_name_size: usize,
    traits: u32,
}

type Handler = unsafe extern "C" fn(*mut CallFrame) -> *mut c_void;

fn register(api: &'static Api, name: &str, platform: &str, handler: Handler) -> Result<()> {
    let missing = || Error::InvalidArgument("the PJRT plugin has no FFI extension".into());
    // SAFETY: the table and its extension chain live as long as the process; every
    // extension starts with PJRT_Extension_Base, and the FFI one is read only when its
    // declared size covers the fields used.
    let mut ext = unsafe { (*api.table()).extension_start };
    while !ext.is_null() {
        let (ty, size) = unsafe { ((*ext).type_, (*ext).struct_size) };
        if ty == PJRT_EXTENSION_TYPE_FFI {
            if size < std::mem::size_of::<PjrtFfiExtension>() {
                return Err(missing());
            }
            let f = unsafe { (*(ext as *const PjrtFfiExtension)).register_handler }
                .ok_or_else(missing)?;
            let mut args = RegisterHandlerArgs {
                struct_size: std::mem::size_of::<RegisterHandlerArgs>(),
                target_name: name.as_ptr() as *const c_char,
                target_name_size: name.len(),
                handler: handler as *const c_void,
                platform_name: platform.as_ptr() as *const c_char,
                platform_name_size: platform.len(),
                traits: 0,
            };
            let err = unsafe { f(&mut args) };
            return api.check("PJRT_FFI_Register_Handler", err);
        }
        ext = unsafe { (*ext).next };
    }
    Err(missing())
}

// The XLA FFI call frame (xla/ffi/api/c_api.h, API 0.1).
#[repr(C)]
struct ExtBase {
    struct_size: usize,
    type_: c_int,
    next: *mut ExtBase,
}
#[repr(C)]
struct ApiVersion {
    struct_size: usize,
    extension_start: *mut ExtBase,
    major: c_int,
    minor: c_int,
}
#[repr(C)]
struct Metadata {
    struct_size: usize,
    api_version: ApiVersion,
    traits: u32,
}
#[repr(C)]
struct MetadataExtension {
    base: ExtBase,
    metadata: *mut Metadata,
}
#[repr(C)]
struct FfiBuffer {
    struct_size: usize,
    extension_start: *mut ExtBase,
    dtype: c_int,
    data: *mut c_void,
    rank: i64,
    dims: *const i64,
}
#[repr(C)]
struct Values {
    struct_size: usize,
    extension_start: *mut ExtBase,
    size: i64,
    types: *const c_int,
    items: *const *mut c_void,
}
#[repr(C)]
struct Attrs {
    struct_size: usize,
    extension_start: *mut ExtBase,
    size: i64,
    types: *const c_int,
    names: *const *const c_void,
    attrs: *const *mut c_void,
}
#[repr(C)]
struct FfiApiHead {
    struct_size: usize,
    extension_start: *mut ExtBase,
    api_version: ApiVersion,
    internal_api: *const c_void,
    error_create: Option<unsafe extern "C" fn(*mut ErrorCreateArgs) -> *mut c_void>,
}
#[repr(C)]
struct ErrorCreateArgs {
    struct_size: usize,
    extension_start: *mut ExtBase,
    message: *const c_char,
    errc: c_int,
}
#[repr(C)]
struct CallFrame {
    struct_size: usize,
    extension_start: *mut ExtBase,
    api: *const FfiApiHead,
    ctx: *mut c_void,
    stage: c_int,
    args: Values,
    rets: Values,
    attrs: Attrs,
    future: *mut c_void,
}

const METADATA_EXTENSION: c_int = 1;
const STAGE_EXECUTE: c_int = 3;
const BUFFER: c_int = 1;
const DTYPE_S32: c_int = 4;
const DTYPE_F32: c_int = 11;
const DTYPE_BF16: c_int = 16;
const ERROR_INVALID_ARGUMENT: c_int = 3;

/// XLA first calls a handler with a metadata extension to learn its FFI version.
unsafe fn answer_metadata(frame: &CallFrame) -> bool {
    let ext = frame.extension_start;
    if ext.is_null() || (*ext).type_ != METADATA_EXTENSION {
        return false;
    }
    let md = (*(ext as *mut MetadataExtension)).metadata;
    (*md).api_version.major = 0;
    (*md).api_version.minor = 1;
    (*md).traits = 0;
    true
}

unsafe fn error(frame: &CallFrame, message: &str) -> *mut c_void {
    let text = std::ffi::CString::new(message).unwrap_or_default();
    match (*frame.api).error_create {
        Some(create) => create(&mut ErrorCreateArgs {
            struct_size: std::mem::size_of::<ErrorCreateArgs>(),
            extension_start: std::ptr::null_mut(),
            message: text.as_ptr(),
            errc: ERROR_INVALID_ARGUMENT,
        }),
        None => std::ptr::null_mut(),
    }
}

/// The `i`-th buffer of `values`, if it is one.
unsafe fn buffer(values: &Values, i: i64) -> Option<&FfiBuffer> {
    if i >= values.size || *values.types.add(i as usize) != BUFFER {
        return None;
    }
    Some(&*(*values.items.add(i as usize) as *const FfiBuffer))
}

unsafe fn dims(b: &FfiBuffer) -> &[i64] {
    std::slice::from_raw_parts(b.dims, b.rank as usize)
}

/// `[batch,] m, k, n` of a product, from the operands' stored shapes.
fn product_sizes(l: &[i64], r: &[i64], lt: bool, rt: bool) -> Option<[usize; 4]> {
    let (batch, l, r) = match (l.len(), r.len()) {
        (2, 2) => (1, l, r),
        (3, 3) if l[0] == r[0] => (l[0], &l[1..], &r[1..]),
        _ => return None,
    };
    let (m, k) = if lt { (l[1], l[0]) } else { (l[0], l[1]) };
    let (k2, n) = if rt { (r[1], r[0]) } else { (r[0], r[1]) };
    (k == k2).then_some([batch as usize, m as usize, k as usize, n as usize])
}

unsafe extern "C" fn bf16_dot<const LT: bool, const RT: bool>(
    frame: *mut CallFrame,
) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    let (Some(l), Some(r), Some(o)) = (
        buffer(&frame.args, 0),
        buffer(&frame.args, 1),
        buffer(&frame.rets, 0),
    ) else {
        return error(
            frame,
            "gptsan_bf16_dot: expected two operand buffers and one result",
        );
    };
    if [l.dtype, r.dtype, o.dtype] != [DTYPE_BF16; 3] {
        return error(frame, "gptsan_bf16_dot: operands and result must be bf16");
    }
    let Some([batch, m, k, n]) = product_sizes(dims(l), dims(r), LT, RT) else {
        return error(
            frame,
            "gptsan_bf16_dot: operand shapes do not make a product",
        );
    };
    let want: Vec<i64> = match l.rank {
        3 => vec![batch as i64, m as i64, n as i64],
        _ => vec![m as i64, n as i64],
    };
    if dims(o) != want.as_slice() {
        return error(
            frame,
            "gptsan_bf16_dot: result shape does not match the operands",
        );
    }
    let threads = cores();
    let a = amx::Operand {
        data: l.data as *const u16,
        transposed: LT,
    };
    let w = amx::Operand {
        data: r.data as *const u16,
        transposed: RT,
    };
    amx::matmul_bf16_batched(batch, (m, k, n), a, w, o.data as *mut u16, threads);
    std::ptr::null_mut()
}

/// The sizes of an attention call from `q`, `k` and `mask`, if they agree.
fn attention_sizes(q: &[i64], k: &[i64], mask: &[i64]) -> Option<masked_attention::Dims> {
    let [b, t, h, dh] = *q else { return None };
    let [_, s, _, _] = *k else { return None };
    if k != [b, s, h, dh] || mask != [b, t, s] || s == 0 {
        return None;
    }
    let size = |x: i64| usize::try_from(x).ok();
    Some(masked_attention::Dims {
        batch: size(b)?,
        heads: size(h)?,
        queries: size(t)?,
        keys: size(s)?,
        head_dim: size(dh)?,
    })
}

/// The first `count` buffers of `values`, if they are all f32, with their shapes.
unsafe fn f32_buffers(values: &Values, count: usize) -> Option<Vec<(*mut f32, &[i64])>> {
    (0..count as i64)
        .map(|i| {
            buffer(values, i)
                .filter(|b| b.dtype == DTYPE_F32)
                .map(|b| (b.data as *mut f32, dims(b)))
        })
        .collect()
}

unsafe extern "C" fn masked_attention_call(frame: *mut CallFrame) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    let results = frame.rets.size as usize;
    let (Some(args), Some(rets)) = (
        f32_buffers(&frame.args, 4),
        f32_buffers(&frame.rets, results),
    ) else {
        return error(
            frame,
            "gptsan_masked_attention: expected four f32 operands (q, k, v, mask) and f32 results",
        );
    };
    let sizes = attention_sizes(args[0].1, args[1].1, args[3].1);
    let stats_shape = args[0].1.get(..3);
    let fits = args[2].1 == args[1].1
        && rets[0].1 == args[0].1
        && (results == 1 || (results == 3 && rets[1..].iter().all(|r| Some(r.1) == stats_shape)));
    let Some(d) = sizes.filter(|_| fits) else {
        return error(
            frame,
            "gptsan_masked_attention: expected q and result [B, T, H, dh], k and v [B, S, H, dh], mask [B, T, S], statistics [B, T, H]",
        );
    };
    let ops = masked_attention::Operands {
        q: args[0].0,
        k: args[1].0,
        v: args[2].0,
        mask: args[3].0,
        out: rets[0].0,
        stats: (results == 3).then(|| masked_attention::Stats {
            row_max: rets[1].0,
            row_sum: rets[2].0,
        }),
    };
    masked_attention::run(ops, d, cores());
    std::ptr::null_mut()
}

unsafe extern "C" fn masked_attention_grad_call(frame: *mut CallFrame) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    let (Some(args), Some(rets)) = (f32_buffers(&frame.args, 8), f32_buffers(&frame.rets, 3))
    else {
        return error(
            frame,
            "gptsan_masked_attention_grad: expected eight f32 operands and three f32 results",
        );
    };
    let sizes = attention_sizes(args[0].1, args[1].1, args[3].1);
    let (q, k) = (args[0].1, args[1].1);
    let stats = q.get(..3);
    let fits = args[2].1 == k
        && args[4].1 == q
        && Some(args[5].1) == stats
        && Some(args[6].1) == stats
        && args[7].1 == q
        && rets[0].1 == q
        && rets[1].1 == k
        && rets[2].1 == k;
    let Some(d) = sizes.filter(|_| fits) else {
        return error(
            frame,
            "gptsan_masked_attention_grad: operand or result shapes do not match q [B, T, H, dh], k [B, S, H, dh]",
        );
    };
    let ops = masked_attention::GradOperands {
        q: args[0].0,
        k: args[1].0,
        v: args[2].0,
        mask: args[3].0,
        out: args[4].0,
        stats: masked_attention::Stats {
            row_max: args[5].0,
            row_sum: args[6].0,
        },
        d_out: args[7].0,
        dq: rets[0].0,
        dk: rets[1].0,
        dv: rets[2].0,
    };
    masked_attention::run_grad(ops, d, cores());
    std::ptr::null_mut()
}

unsafe extern "C" fn chosen_expert_call(frame: *mut CallFrame) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    let [x, expert, kept, wi, wo] = [0, 1, 2, 3, 4].map(|i| buffer(&frame.args, i));
    let (Some(x), Some(expert), Some(kept), Some(wi), Some(wo), Some(out)) =
        (x, expert, kept, wi, wo, buffer(&frame.rets, 0))
    else {
        return error(
            frame,
            "gptsan_chosen_expert_mlp: expected five operand buffers and one result",
        );
    };
    let types = [
        x.dtype,
        expert.dtype,
        kept.dtype,
        wi.dtype,
        wo.dtype,
        out.dtype,
    ];
    if types
        != [
            DTYPE_F32, DTYPE_S32, DTYPE_F32, DTYPE_F32, DTYPE_F32, DTYPE_F32,
        ]
    {
        return error(
            frame,
            "gptsan_chosen_expert_mlp: expected f32 operands and an s32 expert",
        );
    }
    let sizes = match (dims(x), dims(wi)) {
        ([n, d], [e, f, d2]) if d == d2 => Some((*n, *d, *e, *f)),
        _ => None,
    };
    let fits = sizes.is_some_and(|(n, d, e, f)| {
        dims(expert) == [n]
            && dims(kept) == [n]
            && dims(wo) == [e, d, f]
            && dims(out) == [n, d]
            && e > 0
    });
    let (Some((n, d, e, f)), true) = (sizes, fits) else {
        return error(
            frame,
            "gptsan_chosen_expert_mlp: expected x [N, d], expert and kept [N], wi [E, f, d], wo [E, d, f], result [N, d]",
        );
    };
    let d = chosen_expert::Dims {
        tokens: n as usize,
        experts: e as usize,
        d_model: d as usize,
        hidden: f as usize,
    };
    let ops = chosen_expert::Operands {
        x: x.data as *const f32,
        expert: expert.data as *const i32,
        kept: kept.data as *const f32,
        wi: wi.data as *const f32,
        wo: wo.data as *const f32,
        out: out.data as *mut f32,
    };
    chosen_expert::run(ops, d);
    std::ptr::null_mut()
}

/// The buffers of a call whose operands and results are f32 but for the `s32_operand`-th
/// operand (s32), with their dims; None if the counts or types differ.
unsafe fn f32_and_one_s32(
    frame: &CallFrame,
    operands: i64,
    results: i64,
    s32_operand: i64,
) -> Option<(Vec<&FfiBuffer>, Vec<&FfiBuffer>)> {
    if frame.args.size != operands || frame.rets.size != results {
        return None;
    }
    let args: Vec<&FfiBuffer> = (0..operands)
        .map(|i| buffer(&frame.args, i))
        .collect::<Option<_>>()?;
    let rets: Vec<&FfiBuffer> = (0..results)
        .map(|i| buffer(&frame.rets, i))
        .collect::<Option<_>>()?;
    let typed = args.iter().enumerate().all(|(i, b)| {
        b.dtype
            == if i as i64 == s32_operand {
                DTYPE_S32
            } else {
                DTYPE_F32
            }
    }) && rets.iter().all(|b| b.dtype == DTYPE_F32);
    typed.then_some((args, rets))
}

/// The experts' sizes from `x [G, E, C, d]`, `filled [G, E]`, `wi [E, f, d]` and
/// `wo [E, d, f]`.
unsafe fn expert_sizes(
    x: &FfiBuffer,
    filled: &FfiBuffer,
    wi: &FfiBuffer,
    wo: &FfiBuffer,
) -> Option<expert_mlp::Dims> {
    let ([g, e, c, d], [e2, f, d2]) = (dims(x), dims(wi)) else {
        return None;
    };
    let fits = dims(filled) == [*g, *e] && e2 == e && d2 == d && dims(wo) == [*e, *d, *f];
    fits.then_some(expert_mlp::Dims {
        groups: *g as usize,
        experts: *e as usize,
        capacity: *c as usize,
        d_model: *d as usize,
        hidden: *f as usize,
    })
}

unsafe extern "C" fn expert_mlp_call(frame: *mut CallFrame) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    let Some((args, rets)) = f32_and_one_s32(frame, 4, 2, 1) else {
        return error(
            frame,
            "gptsan_expert_mlp: expected operands x, filled (s32), wi, wo and results out, hidden, all f32 but filled",
        );
    };
    let d = expert_sizes(args[0], args[1], args[2], args[3]).filter(|d| {
        let (g, e, c) = (d.groups as i64, d.experts as i64, d.capacity as i64);
        dims(rets[0]) == dims(args[0]) && dims(rets[1]) == [g, e, c, d.hidden as i64]
    });
    let Some(d) = d else {
        return error(
            frame,
            "gptsan_expert_mlp: expected x and out [G, E, C, d], filled [G, E], wi [E, f, d], wo [E, d, f], hidden [G, E, C, f]",
        );
    };
    let ops = expert_mlp::Operands {
        x: args[0].data as *const f32,
        filled: args[1].data as *const i32,
        wi: args[2].data as *const f32,
        wo: args[3].data as *const f32,
        out: rets[0].data as *mut f32,
        hidden: rets[1].data as *mut f32,
    };
    expert_mlp::run(ops, d, cores());
    std::ptr::null_mut()
}

unsafe extern "C" fn expert_mlp_grad_call(frame: *mut CallFrame) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    let Some((args, rets)) = f32_and_one_s32(frame, 6, 3, 1) else {
        return error(
            frame,
            "gptsan_expert_mlp_grad: expected operands x, filled (s32), wi, wo, hidden, d_out and results dx, dwi, dwo, all f32 but filled",
        );
    };
    let d = expert_sizes(args[0], args[1], args[2], args[3]).filter(|d| {
        let (g, e, c) = (d.groups as i64, d.experts as i64, d.capacity as i64);
        dims(args[4]) == [g, e, c, d.hidden as i64]
            && dims(args[5]) == dims(args[0])
            && dims(rets[0]) == dims(args[0])
            && dims(rets[1]) == dims(args[2])
            && dims(rets[2]) == dims(args[3])
    });
    let Some(d) = d else {
        return error(
            frame,
            "gptsan_expert_mlp_grad: operand or result shapes do not match x [G, E, C, d], wi [E, f, d], wo [E, d, f]",
        );
    };
    let ops = expert_mlp::GradOperands {
        x: args[0].data as *const f32,
        filled: args[1].data as *const i32,
        wi: args[2].data as *const f32,
        wo: args[3].data as *const f32,
        hidden: args[4].data as *const f32,
        d_out: args[5].data as *const f32,
        dx: rets[0].data as *mut f32,
        dwi: rets[1].data as *mut f32,
        dwo: rets[2].data as *mut f32,
    };
    expert_mlp::run_grad(ops, d, cores());
    std::ptr::null_mut()
}

unsafe extern "C" fn f32_matmul_nt_call(frame: *mut CallFrame) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    let (Some(args), Some(rets)) = (f32_buffers(&frame.args, 2), f32_buffers(&frame.rets, 1))
    else {
        return error(
            frame,
            "gptsan_f32_matmul_nt: expected two f32 operands and one f32 result",
        );
    };
    let sizes = match (args[0].1, args[1].1, rets[0].1) {
        ([m, k], [n, k2], [m2, n2]) if k == k2 && m == m2 && n == n2 => {
            Some((*m as usize, *n as usize, *k as usize))
        }
        _ => None,
    };
    let Some((m, n, k)) = sizes else {
        return error(
            frame,
            "gptsan_f32_matmul_nt: expected a [M, K], b [N, K] and result [M, N]",
        );
    };
    let a = gemm::MatRef::rows(args[0].0, k);
    let b = gemm::MatRef::rows(args[1].0, k).t();
    #[cfg(target_arch = "x86_64")]
    gemm::gemm_threads(m, n, k, a, b, rets[0].0, n, gemm::Store::Overwrite, cores());
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (m, n, a, b, rets);
    std::ptr::null_mut()
}

/// `(V, N, K)` when `w [V, K]` and `h [N, K]` agree.
fn head_sizes(w: &[i64], h: &[i64]) -> Option<(usize, usize, usize)> {
    match (w, h) {
        ([v, k], [n, k2]) if k == k2 => Some((*v as usize, *n as usize, *k as usize)),
        _ => None,
    }
}

unsafe extern "C" fn head_logsumexp_call(frame: *mut CallFrame) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    const EXPECTED: &str =
        "gptsan_head_logsumexp: expected f32 w [V, K], h [N, K]; results lse [N], logits [V, N]";
    let (Some(args), Some(rets)) = (f32_buffers(&frame.args, 2), f32_buffers(&frame.rets, 2))
    else {
        return error(frame, EXPECTED);
    };
    let Some((v, n, k)) = head_sizes(args[0].1, args[1].1) else {
        return error(frame, EXPECTED);
    };
    if rets[0].1 != [n as i64] || rets[1].1 != [v as i64, n as i64] {
        return error(frame, EXPECTED);
    }
    let op = head_logsumexp::HeadForward {
        w: args[0].0,
        h: args[1].0,
        logits: rets[1].0,
        lse: rets[0].0,
        v,
        n,
        k,
    };
    head_logsumexp::forward(op, cores());
    std::ptr::null_mut()
}

unsafe extern "C" fn head_logsumexp_grad_call(frame: *mut CallFrame) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    const EXPECTED: &str = "gptsan_head_logsumexp_grad: expected f32 w [V, K], h [N, K], \
         logits [V, N], lse [N], its cotangent [N]; results dw [V, K], dh [N, K]";
    let (Some(args), Some(rets)) = (f32_buffers(&frame.args, 5), f32_buffers(&frame.rets, 2))
    else {
        return error(frame, EXPECTED);
    };
    let Some((v, n, k)) = head_sizes(args[0].1, args[1].1) else {
        return error(frame, EXPECTED);
    };
    let (vn, nn) = ([v as i64, n as i64], [n as i64]);
    if args[2].1 != vn || args[3].1 != nn || args[4].1 != nn {
        return error(frame, EXPECTED);
    }
    if rets[0].1 != args[0].1 || rets[1].1 != args[1].1 {
        return error(frame, EXPECTED);
    }
    let op = head_logsumexp::HeadGrad {
        logits: args[2].0,
        lse: args[3].0,
        g: args[4].0,
        h: args[1].0,
        w: args[0].0,
        dw: rets[0].0,
        dh: rets[1].0,
        v,
        n,
        k,
    };
    head_logsumexp::gradient(op, cores());
    std::ptr::null_mut()
}

unsafe extern "C" fn f32_matvec_nt_call(frame: *mut CallFrame) -> *mut c_void {
    let frame = &*frame;
    if answer_metadata(frame) || frame.stage != STAGE_EXECUTE {
        return std::ptr::null_mut();
    }
    const EXPECTED: &str =
        "gptsan_f32_matvec_nt: expected f32 x [1, K], w [N, K] and result [1, N]";
    let (Some(args), Some(rets)) = (f32_buffers(&frame.args, 2), f32_buffers(&frame.rets, 1))
    else {
        return error(frame, EXPECTED);
    };
    let sizes = match (args[0].1, args[1].1, rets[0].1) {
        ([1, k], [n, k2], [1, n2]) if k == k2 && n == n2 => Some((*n as usize, *k as usize)),
        _ => None,
    };
    let Some((n, k)) = sizes else {
        return error(frame, EXPECTED);
    };
    #[cfg(target_arch = "x86_64")]
    crate::matvec::Matvec {
        w: args[1].0,
        rows: n,
        cols: k,
        x: args[0].0,
        y: rets[0].0,
        scale: 1.0,
        relu: false,
    }
    .shared();
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (n, k);
    std::ptr::null_mut()
}
