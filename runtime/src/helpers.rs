//! Helper threads for kernels too short to start threads for (tens of microseconds: a
//! decode step's matrix-vector products), where a second core still adds bandwidth.
//!
//! [`share`] runs a job on the calling thread and offers it to the helpers (one per
//! further core, at most [`MAX_HELPERS`], started on first use). A job takes its own work in chunks (an atomic
//! counter) until none is left, so the caller never waits for a helper that has not
//! started: a helper that wakes late finds nothing left and returns, and the caller waits
//! only for chunks already taken. After a job the helpers poll for [`SPIN`], then sleep
//! until the next one.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a helper keeps polling for the next job before it sleeps. A decode step
/// calls a product every few tens of microseconds; polling longer takes the core from
/// XLA's own threads (with 2 ms, decoding with XLA's products, `GPTSAN_F32_MATVEC=xla`,
/// fell from 635-690 to 568-603 tokens/s in `hf` routing). Polling yields nothing to other threads: `sched_yield` hands the core to the
/// idle-priority threads of [`crate::cores_awake`], and the helper then joins too late
/// (decoding 30% slower); at nice 10 it lost 5-10%.
const SPIN: Duration = Duration::from_micros(300);

/// A job as the helpers see it: a pointer to the caller's `&dyn Fn()`.
type JobRef<'a> = &'a (dyn Fn() + Sync);

/// The state shared by the callers and the helpers.
struct Team {
    /// The open job's `JobRef`, on the caller's stack; read only while `open`.
    job: AtomicPtr<()>,
    /// Whether the job at `job` may still be joined.
    open: AtomicBool,
    /// Bumped for every job, so that sleeping or polling helpers notice it.
    generation: AtomicUsize,
    /// Helpers inside a job (or checking whether to join it).
    active: AtomicUsize,
    /// Helpers asleep (to be woken).
    sleeping: AtomicUsize,
    /// One job at a time; a second caller runs its job alone.
    caller: Mutex<()>,
    /// The helpers, to wake them; set once they are started.
    threads: OnceLock<Vec<Thread>>,
}

/// At most this many helpers: the products they share are bound by memory bandwidth,
/// which a few cores saturate, and every helper polls a core after each product.
const MAX_HELPERS: usize = 3;

/// The helpers, started on first use (none on a single core).
fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = cores.min(MAX_HELPERS + 1);
        let team: &'static Team = Box::leak(Box::new(Team {
            job: AtomicPtr::new(std::ptr::null_mut()),
            open: AtomicBool::new(false),
            generation: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            caller: Mutex::new(()),
            threads: OnceLock::new(),
        }));
        let shared: &'static Team = team;
        let threads = (1..cores)
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name(format!("gptsan-helper-{i}"))
                    .spawn(move || help(shared))
                    .ok()
                    .map(|h| h.thread().clone())
            })
            .collect();
        let _ = shared.threads.set(threads);
        shared
    })
}

/// Runs `job` on this thread and on whichever helpers join it; returns when every
/// participant has returned from it. `job` must split its work itself (each call takes
/// chunks until none are left) and tolerate being called by any number of threads.
pub fn share(job: &(dyn Fn() + Sync)) {
    let team = team();
    let Ok(_one_at_a_time) = team.caller.try_lock() else {
        job();
        return;
    };
    let threads = team.threads.get().map_or(&[][..], Vec::as_slice);
    if threads.is_empty() {
        job();
        return;
    }
    let job_ref: JobRef = job;
    team.job.store(&job_ref as *const JobRef as *mut (), SeqCst);
    team.open.store(true, SeqCst);
    // From here on the job is closed and its helpers waited for however this returns
    // (a panicking job included), before `job_ref` goes away.
    let _closed_on_return = Close(team);
    team.generation.fetch_add(1, SeqCst);
    if team.sleeping.load(SeqCst) > 0 {
        for t in threads {
            t.unpark();
        }
    }
    job();
}

/// Closes the open job and waits until no helper is inside it.
struct Close(&'static Team);

impl Drop for Close {
    fn drop(&mut self) {
        self.0.open.store(false, SeqCst);
        while self.0.active.load(SeqCst) > 0 {
            std::hint::spin_loop();
        }
    }
}

/// A helper's life: wait for a new job, join it if still open, repeat.
fn help(team: &'static Team) {
    let mut seen = team.generation.load(SeqCst);
    loop {
        seen = next_generation(team, seen);
        team.active.fetch_add(1, SeqCst);
        if team.open.load(SeqCst) {
            // SAFETY: while `open` the caller's `JobRef` is alive: the caller clears
            // `open` before returning and then waits for `active` to drop to zero, and
            // this helper was counted in `active` before it saw `open`.
            let job = unsafe { *(team.job.load(SeqCst) as *const JobRef) };
            // A panicking job must still leave `active`, or its caller would wait
            // forever; the panic is reported by the hook and the helper lives on.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
        team.active.fetch_sub(1, SeqCst);
    }
}

/// Waits until the generation differs from `seen`: polls for [`SPIN`], then sleeps.
fn next_generation(team: &Team, seen: usize) -> usize {
    let mut since = Instant::now();
    loop {
        let now = team.generation.load(SeqCst);
        if now != seen {
            return now;
        }
        if since.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        team.sleeping.fetch_add(1, SeqCst);
        if team.generation.load(SeqCst) == seen {
            std::thread::park_timeout(Duration::from_millis(50));
        }
        team.sleeping.fetch_sub(1, SeqCst);
        since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many short jobs, each taking its chunks from a counter: every chunk is done
    /// exactly once, whichever threads joined, also after the helpers went to sleep.
    #[test]
    fn every_chunk_runs_once() {
        for round in 0..200 {
            let chunks = 1 + round % 37;
            let next = AtomicUsize::new(0);
            let done: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
            share(&|| loop {
                let c = next.fetch_add(1, SeqCst);
                if c >= chunks {
                    break;
                }
                done[c].fetch_add(1, SeqCst);
            });
            assert!(done.iter().all(|d| d.load(SeqCst) == 1), "round {round}");
            if round % 50 == 49 {
                std::thread::sleep(SPIN * 2);
            }
        }
    }

    /// A job that panics on every thread: the caller's `share` panics (after the helpers
    /// have left the job), and later jobs still run on the helpers.
    #[test]
    fn a_panicking_job_leaves_the_helpers_usable() {
        // The panic messages this prints are expected.
        let failed = std::panic::catch_unwind(|| share(&|| panic!("a failing chunk")));
        assert!(failed.is_err());
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        share(&|| {
            while next.fetch_add(1, SeqCst) < 64 {
                done.fetch_add(1, SeqCst);
            }
        });
        assert_eq!(done.load(SeqCst), 64);
    }
}
