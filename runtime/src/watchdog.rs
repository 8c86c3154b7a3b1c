//! A watchdog for executions over several devices.
//!
//! A multi-device program waits in collectives (all-reduce, all-to-all, ...) until every
//! device arrives. If one never does, the execute call never returns and the plugin finally
//! aborts the process with a C++ stack trace. The watchdog turns that into one clear line:
//! an execution that runs past its deadline is reported (program, mesh, how long it ran,
//! and the note the application left, e.g. where its last checkpoint is) and the process
//! exits with [`STUCK_EXIT_CODE`]. The stuck call cannot be cancelled, so exiting is the
//! only clean way out; applications keep their files safe by writing them atomically.
//!
//! Deadline of one execution: `GPTSAN_COLLECTIVE_TIMEOUT` seconds when set, otherwise
//! [`DEFAULT_FLOOR`] or 20x the slowest earlier execution of the same executable,
//! whichever is longer (a legitimately slow program is never cut short once it has run).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Exit status of a process stopped by the watchdog.
pub const STUCK_EXIT_CODE: i32 = 75;
/// The shortest deadline when no timeout is configured.
pub const DEFAULT_FLOOR: Duration = Duration::from_secs(120);
/// The environment variable that fixes the deadline (seconds, fractions allowed).
pub const TIMEOUT_VAR: &str = "GPTSAN_COLLECTIVE_TIMEOUT";

struct Watch {
    deadline: Instant,
    started: Instant,
    what: String,
}

#[derive(Default)]
struct State {
    next_id: u64,
    watches: BTreeMap<u64, Watch>,
    /// Appended to the report, e.g. "the last checkpoint ... is intact".
    note: Option<String>,
}

struct Monitor {
    state: Mutex<State>,
    wake: Condvar,
}

fn monitor() -> &'static Monitor {
    static MONITOR: OnceLock<&'static Monitor> = OnceLock::new();
    MONITOR.get_or_init(|| {
        let m: &'static Monitor = Box::leak(Box::new(Monitor {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("gptsan-watchdog".into())
            .spawn(move || watch_loop(m))
            .expect("spawning the watchdog thread");
        m
    })
}

/// Sleeps until the earliest deadline; reports and exits when one passes.
fn watch_loop(m: &'static Monitor) {
    let mut state = m.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        let earliest = state.watches.values().min_by_key(|w| w.deadline);
        match earliest {
            Some(w) if w.deadline <= now => {
                report_and_exit(w, state.note.as_deref());
            }
            Some(w) => {
                let wait = w.deadline - now;
                state = m
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            None => state = m.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

fn report_and_exit(w: &Watch, note: Option<&str>) -> ! {
    let mut line = format!(
        "error: {} did not finish after {:.3} s: a collective is stuck (devices waiting for \
         each other); stopped by the watchdog ({TIMEOUT_VAR} sets the limit)",
        w.what,
        w.started.elapsed().as_secs_f64()
    );
    if let Some(n) = note {
        line.push_str("; ");
        line.push_str(n);
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
    // The stuck execution holds plugin threads that exit handlers would wait for.
    unsafe { libc::_exit(STUCK_EXIT_CODE) }
}

/// An armed watch; dropping it (the execution returned) disarms it.
pub struct Guard {
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let m = monitor();
        let mut state = m.state.lock().unwrap_or_else(|p| p.into_inner());
        state.watches.remove(&self.id);
    }
}

/// Watches one execution described by `what` (program and mesh) for `timeout`.
pub fn arm(what: String, timeout: Duration) -> Guard {
    let m = monitor();
    let mut state = m.state.lock().unwrap_or_else(|p| p.into_inner());
    let id = state.next_id;
    state.next_id += 1;
    let started = Instant::now();
    state.watches.insert(
        id,
        Watch {
            deadline: started + timeout,
            started,
            what,
        },
    );
    m.wake.notify_all();
    Guard { id }
}

/// Sets the sentence added to a watchdog report (None removes it).
pub fn set_note(note: Option<String>) {
    let m = monitor();
    m.state.lock().unwrap_or_else(|p| p.into_inner()).note = note;
}

/// The deadline for an execution whose slowest earlier run took `slowest`.
pub fn timeout_for(slowest: Duration) -> Duration {
    if let Some(t) = configured_timeout() {
        return t;
    }
    DEFAULT_FLOOR.max(slowest * 20)
}

/// `GPTSAN_COLLECTIVE_TIMEOUT` as a duration, when set to a positive number.
fn configured_timeout() -> Option<Duration> {
    let v = std::env::var(TIMEOUT_VAR).ok()?;
    match v.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
        _ => {
            tracing::warn!("ignoring {TIMEOUT_VAR}={v:?}: not a positive number of seconds");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_grows_with_the_slowest_run() {
        if std::env::var_os(TIMEOUT_VAR).is_some() {
            return;
        }
        assert_eq!(timeout_for(Duration::from_millis(10)), DEFAULT_FLOOR);
        assert_eq!(
            timeout_for(Duration::from_secs(10)),
            Duration::from_secs(200)
        );
    }

    #[test]
    fn disarmed_watches_do_not_fire() {
        // Armed and dropped well before the deadline: the process keeps running.
        for _ in 0..100 {
            let g = arm("test program".into(), Duration::from_millis(200));
            drop(g);
        }
        std::thread::sleep(Duration::from_millis(300));
        let m = monitor();
        assert!(m.state.lock().unwrap().watches.is_empty());
    }
}
