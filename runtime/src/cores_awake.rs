//! Keeping the CPU's cores out of their idle state while the model runs (training steps,
//! forward passes, token-by-token decoding on the CPU plugin).
//!
//! Why: XLA CPU splits kernels into parts and hands parts to the threads of its pool.
//! Between kernels those threads sleep again after a short spin, and on a virtual machine
//! an idle core halts; waking it can take as long as the part it was woken for, so the
//! caller often does every part itself and pays the wake-up on top (decoding's many small
//! kernels suffer most). OpenMP runtimes, the one under PyTorch among them, avoid this by
//! spinning for a while after every parallel region (`OMP_WAIT_POLICY=active`). Here one
//! thread per core spins at `SCHED_IDLE` priority while a [`CoresAwake`] guard lives: any
//! other runnable thread preempts such a thread at once, so it takes no time from real
//! work, but the cores never halt. Measured on `small` in six alternating pairs of runs
//! each (README, Runtime): greedy decoding about 4% faster (every pair, both routings),
//! the forward pass about 4% (five pairs of six), the train step within the noise.
//!
//! Not started when `GPTSAN_WAIT_POLICY=passive`, off Linux, or when the process's cgroup
//! limits its CPU time (spinning would spend the quota that real work needs).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The environment variable that turns the spinning off (`passive`).
pub const WAIT_POLICY_VAR: &str = "GPTSAN_WAIT_POLICY";

/// While any guard is alive, one idle-priority thread per available core keeps the
/// cores awake. Guards are counted process-wide: nested ones (a generation inside a
/// training run, a served forward while rows decode) share the same threads, which stop
/// when the last guard drops.
pub struct CoresAwake {
    /// Whether this guard counts as a holder (false when the policy is passive).
    holds: bool,
}

/// The holders alive and the threads they share.
static SHARED: Mutex<(usize, Option<Spinners>)> = Mutex::new((0, None));

impl CoresAwake {
    /// Keeps the cores awake if [`WaitPolicy::of_this_process`] is active.
    pub fn start() -> CoresAwake {
        let count = WaitPolicy::of_this_process().spinners();
        if count == 0 {
            return CoresAwake { holds: false };
        }
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        shared.0 += 1;
        if shared.1.is_none() {
            shared.1 = Some(Spinners::spawn(count));
        }
        CoresAwake { holds: true }
    }

    /// Threads spinning for the guards alive now.
    pub fn spinning_now() -> usize {
        let shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        shared.1.as_ref().map_or(0, Spinners::spinning)
    }
}

impl Drop for CoresAwake {
    fn drop(&mut self) {
        if !self.holds {
            return;
        }
        let last = {
            let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
            shared.0 -= 1;
            if shared.0 == 0 {
                shared.1.take()
            } else {
                None
            }
        };
        drop(last); // joins outside the lock
    }
}

/// The spinning threads themselves; dropping them stops and joins them.
struct Spinners {
    stop: Arc<AtomicBool>,
    spinning: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Spinners {
    fn spawn(count: usize) -> Spinners {
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = Arc::new(AtomicUsize::new(0));
        let threads = (0..count)
            .filter_map(|i| {
                let (stop, spinning) = (stop.clone(), spinning.clone());
                std::thread::Builder::new()
                    .name(format!("gptsan-awake-{i}"))
                    .spawn(move || spin_at_idle_priority(&stop, &spinning))
                    .ok()
            })
            .collect();
        Spinners {
            stop,
            spinning,
            threads,
        }
    }

    /// Threads spinning now (those that got idle priority; a thread that could not get
    /// it does not spin, so as never to compete with real work).
    fn spinning(&self) -> usize {
        self.spinning.load(Ordering::Acquire)
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What [`CoresAwake::start`] does in this process, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitPolicy {
    /// One spinning thread per core.
    Active { cores: usize },
    /// `GPTSAN_WAIT_POLICY=passive`.
    Passive,
    /// The cgroup caps the process's CPU time.
    CpuQuota,
    /// Not Linux (no `SCHED_IDLE`).
    Unsupported,
}

impl WaitPolicy {
    /// The policy from the environment, the cgroup and the cores this process may use.
    pub fn of_this_process() -> WaitPolicy {
        let var = std::env::var(WAIT_POLICY_VAR).ok();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::decide(
            var.as_deref(),
            cfg!(target_os = "linux"),
            cpu_time_is_limited,
            cores,
        )
    }

    /// `var` is the variable's value; a value other than `active` or `passive` is
    /// reported and treated as `active`, the default. The cgroup is read only when needed.
    fn decide(
        var: Option<&str>,
        linux: bool,
        quota: impl FnOnce() -> bool,
        cores: usize,
    ) -> WaitPolicy {
        match var.map(str::trim) {
            Some(p) if p.eq_ignore_ascii_case("passive") => return WaitPolicy::Passive,
            None | Some("") => {}
            Some(p) if p.eq_ignore_ascii_case("active") => {}
            Some(p) => {
                tracing::warn!(
                    "{WAIT_POLICY_VAR}={p:?} is neither active nor passive; using active"
                )
            }
        }
        if !linux {
            WaitPolicy::Unsupported
        } else if quota() {
            WaitPolicy::CpuQuota
        } else {
            WaitPolicy::Active { cores }
        }
    }

    fn spinners(self) -> usize {
        match self {
            WaitPolicy::Active { cores } => cores,
            _ => 0,
        }
    }

    /// In words, for reports such as `gptsan bench`'s.
    pub fn describe(self) -> String {
        match self {
            WaitPolicy::Active { cores } => format!(
                "active ({cores} idle-priority threads keep the cores awake; \
                 {WAIT_POLICY_VAR}=passive turns them off)"
            ),
            WaitPolicy::Passive => format!("passive ({WAIT_POLICY_VAR}=passive)"),
            WaitPolicy::CpuQuota => "passive (the cgroup caps this process's CPU time)".into(),
            WaitPolicy::Unsupported => "passive (spinning at idle priority needs Linux)".into(),
        }
    }
}

/// Whether this process's cgroup caps its CPU time: cgroup v2's `cpu.max` (of the
/// process's own cgroup, or of the namespace root a container sees) other than `max`, or
/// v1's `cpu.cfs_quota_us` other than -1.
fn cpu_time_is_limited() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let own = read("/proc/self/cgroup")
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .map(|path| format!("/sys/fs/cgroup{}/cpu.max", path.trim_end_matches('/')));
    let v2 = own
        .iter()
        .map(String::as_str)
        .chain(["/sys/fs/cgroup/cpu.max"])
        .filter_map(read)
        .any(|t| cpu_max_is_a_quota(&t));
    let v1 = [
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
    ]
    .into_iter()
    .filter_map(read)
    .any(|t| cfs_quota_is_a_quota(&t));
    v2 || v1
}

/// cgroup v2 `cpu.max` holds `$MAX $PERIOD`; `max` means no limit.
fn cpu_max_is_a_quota(text: &str) -> bool {
    text.split_whitespace().next().is_some_and(|m| m != "max")
}

/// cgroup v1 `cpu.cfs_quota_us`: -1 means no limit.
fn cfs_quota_is_a_quota(text: &str) -> bool {
    text.trim().parse::<i64>().is_ok_and(|q| q > 0)
}

/// The body of one thread: lowers itself to `SCHED_IDLE`, then spins until `stop`.
fn spin_at_idle_priority(stop: &AtomicBool, spinning: &AtomicUsize) {
    if !lower_to_idle_priority() {
        return;
    }
    spinning.fetch_add(1, Ordering::AcqRel);
    while !stop.load(Ordering::Acquire) {
        for _ in 0..64 {
            std::hint::spin_loop();
        }
    }
    spinning.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(target_os = "linux")]
fn lower_to_idle_priority() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn lower_to_idle_priority() -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Waits (bounded) until `count()` is `n`.
    fn wait_for(n: usize, count: impl Fn() -> usize) -> usize {
        for _ in 0..2_000 {
            if count() == n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        count()
    }

    #[test]
    fn every_thread_spins_at_idle_priority_until_dropped() {
        let spinners = Spinners::spawn(2);
        assert_eq!(spinners.threads.len(), 2);
        assert_eq!(wait_for(2, || spinners.spinning()), 2);
        let spinning = spinners.spinning.clone();
        drop(spinners);
        // Drop joined every thread, and each left its loop.
        assert_eq!(spinning.load(Ordering::Acquire), 0);
    }

    #[test]
    fn nested_guards_share_one_set_of_threads_until_the_last_drops() {
        // The only test that touches the process-wide guards.
        let cores = WaitPolicy::of_this_process().spinners();
        if cores == 0 {
            return; // passive here (variable or cgroup quota): nothing to share
        }
        let outer = CoresAwake::start();
        let inner = CoresAwake::start();
        assert_eq!(wait_for(cores, CoresAwake::spinning_now), cores);
        drop(inner);
        assert_eq!(
            CoresAwake::spinning_now(),
            cores,
            "the outer guard still holds"
        );
        drop(outer);
        assert_eq!(CoresAwake::spinning_now(), 0);
    }

    #[test]
    fn a_spinning_thread_runs_under_sched_idle() {
        // The policy is per thread: check it from inside a thread that lowered itself.
        let policy = std::thread::spawn(|| {
            assert!(lower_to_idle_priority());
            // SAFETY: pid 0 is the calling thread.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
    }

    #[test]
    fn a_cgroup_cpu_quota_is_recognised_in_both_versions() {
        assert!(!cpu_max_is_a_quota("max 100000\n"));
        assert!(cpu_max_is_a_quota("200000 100000\n"));
        assert!(!cpu_max_is_a_quota(""));
        assert!(!cfs_quota_is_a_quota("-1\n"));
        assert!(cfs_quota_is_a_quota("150000\n"));
        assert!(!cfs_quota_is_a_quota("garbage"));
    }

    #[test]
    fn the_policy_follows_the_variable_the_platform_and_the_cgroup() {
        let decide = |var, linux, quota: bool| WaitPolicy::decide(var, linux, || quota, 2);
        assert_eq!(decide(Some("passive"), true, false), WaitPolicy::Passive);
        assert_eq!(decide(Some(" PASSIVE "), true, false), WaitPolicy::Passive);
        assert_eq!(
            decide(Some("active"), true, false),
            WaitPolicy::Active { cores: 2 }
        );
        assert_eq!(decide(None, true, false), WaitPolicy::Active { cores: 2 });
        assert_eq!(
            decide(Some("sometimes"), true, false),
            WaitPolicy::Active { cores: 2 }
        );
        assert_eq!(decide(None, true, true), WaitPolicy::CpuQuota);
        assert_eq!(decide(None, false, false), WaitPolicy::Unsupported);
        assert_eq!(WaitPolicy::Active { cores: 3 }.spinners(), 3);
        assert_eq!(WaitPolicy::CpuQuota.spinners(), 0);
    }
}
