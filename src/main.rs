//! The `gptsan` command line. Each subcommand lives in its own module under `cli/`.

use clap::Parser;

/// jemalloc serves the whole process, the PJRT plugin included (its `malloc` binds to the
/// executable's). XLA allocates a step's temporaries afresh on every execution; glibc (and
/// jemalloc's defaults for blocks over 8 MB) hand them back to the kernel at once, so each
/// step faulted and zeroed about 1.3 GB again (a quarter of the small train step's time).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at start-up ([`runtime::JEMALLOC_CONF`]: freed pages are kept
/// for reuse, never purged, as jemalloc purges gradually over any finite decay time,
/// which still faulted pages back in on every step). The process keeps its peak memory,
/// which a training or serving process reaches on its first step anyway. `MALLOC_CONF` in
/// the environment still overrides these.
#[cfg(target_os = "linux")]
#[used]
#[export_name = "malloc_conf"]
static MALLOC_CONF: &u8 = &runtime::JEMALLOC_CONF[0];

fn main() {
    gptsan::cli::init_logging();
    let cli = gptsan::cli::Cli::parse();
    if let Err(err) = gptsan::cli::run(cli) {
        // One clear line (plus its causes), never a panic or a backtrace.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
