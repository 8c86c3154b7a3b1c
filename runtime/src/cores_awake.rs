//! Keeping the CPU's cores out of their idle state while a latency-bound loop runs
//! (decoding one token at a time on the CPU plugin).
//!
//! Why: XLA CPU splits many small kernels of a decode step in two and hands one half to a
//! thread of its pool. Between kernels that thread sleeps again after a short spin, and on
//! a virtual machine an idle core halts; waking it takes about as long as the half kernel
//! it was woken for, so the caller mostly ends up doing both halves and pays the wake-up
//! on top. OpenMP runtimes (the one under PyTorch among them) avoid this by spinning for a
//! while after every parallel region (`OMP_WAIT_POLICY=active`). Here one thread per core
//! spins at `SCHED_IDLE` priority while a [`CoresAwake`] guard lives: any other runnable
//! thread preempts such a thread at once, so it takes no time from real work, but the
//! cores never halt. Greedy decoding of `small` was 6-10% faster with it (README,
//! Benchmarks).
//!
//! `GPTSAN_WAIT_POLICY=passive` turns it off. Off Linux it does nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The environment variable that turns the spinning off (`passive`).
pub const WAIT_POLICY_VAR: &str = "GPTSAN_WAIT_POLICY";

/// While alive, one idle-priority thread per available core keeps the cores awake.
/// Dropping it stops and joins those threads.
pub struct CoresAwake {
    stop: Arc<AtomicBool>,
    spinning: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl CoresAwake {
    /// Starts the spinning threads, unless `GPTSAN_WAIT_POLICY=passive`.
    pub fn start() -> CoresAwake {
        let policy = std::env::var(WAIT_POLICY_VAR).ok();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(spinner_count(policy.as_deref(), cores))
    }

    fn with_threads(count: usize) -> CoresAwake {
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
        CoresAwake {
            stop,
            spinning,
            threads,
        }
    }

    /// How many threads are spinning now (those that got idle priority; a thread that
    /// could not get it does not spin, so as never to compete with real work).
    pub fn spinning(&self) -> usize {
        self.spinning.load(Ordering::Acquire)
    }

    /// How many threads were started (spinning or not yet).
    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for CoresAwake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Threads to start for `policy` (the variable's value) on `cores` cores: none for
/// `passive` or off Linux, one per core otherwise. A value other than `active` or
/// `passive` is reported and treated as `active`, OpenMP's default for this setting.
fn spinner_count(policy: Option<&str>, cores: usize) -> usize {
    let passive = match policy.map(str::trim) {
        None | Some("") => false,
        Some(p) if p.eq_ignore_ascii_case("passive") => true,
        Some(p) if p.eq_ignore_ascii_case("active") => false,
        Some(p) => {
            tracing::warn!("{WAIT_POLICY_VAR}={p:?} is neither active nor passive; using active");
            false
        }
    };
    if passive || !cfg!(target_os = "linux") {
        0
    } else {
        cores
    }
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

    /// Waits (bounded) until `guard` has `n` spinning threads.
    fn wait_for_spinning(guard: &CoresAwake, n: usize) -> usize {
        for _ in 0..2_000 {
            if guard.spinning() == n {
                break;
            }
            std::thread::yield_now();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        guard.spinning()
    }

    #[test]
    fn every_thread_spins_at_idle_priority_until_the_guard_drops() {
        let guard = CoresAwake::with_threads(2);
        assert_eq!(guard.threads(), 2);
        assert_eq!(wait_for_spinning(&guard, 2), 2);
        let spinning = guard.spinning.clone();
        drop(guard);
        // Drop joined every thread, and each left its loop.
        assert_eq!(spinning.load(Ordering::Acquire), 0);
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
    fn the_passive_policy_starts_no_thread_and_the_active_one_one_per_core() {
        assert_eq!(spinner_count(Some("passive"), 2), 0);
        assert_eq!(spinner_count(Some(" PASSIVE "), 2), 0);
        assert_eq!(spinner_count(Some("active"), 2), 2);
        assert_eq!(spinner_count(None, 3), 3);
        assert_eq!(spinner_count(Some("sometimes"), 2), 2);
        let guard = CoresAwake::with_threads(0);
        assert_eq!((guard.threads(), guard.spinning()), (0, 0));
    }
}
