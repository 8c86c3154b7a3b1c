//! `gptsan serve`: an OpenAI-style completion server. Requests are validated and
//! tokenized in async handlers ([`http`], [`api`]); one engine thread owns the device and
//! decodes every active request in one batch per step ([`engine`]), runs beam and spout
//! prompts alone ([`solo`]) and answers one-forward requests ([`forward`]). `GET /` serves
//! a page to try it all in a browser ([`playground`]).

pub mod api;
pub mod client;
pub mod engine;
pub mod fill;
pub mod forward;
pub mod http;
pub mod inspect;
pub mod playground;
pub mod programs;
pub mod solo;
pub mod text;

use anyhow::{Context, Result};
use engine::Model;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub host: String,
    /// 0: any free port (the bound address is reported).
    pub port: u16,
    /// Rows decoded together (the batch cache's size).
    pub max_batch: usize,
    /// Prompts waiting for a row before new requests get 503.
    pub max_queue: usize,
    pub plugin: Option<String>,
    /// The model name in responses.
    pub model_name: String,
}

/// Serves until SIGINT or SIGTERM, then finishes the requests in flight and stops.
/// Prints `listening on http://ADDR` once requests are accepted.
pub fn run(model: Model, opts: &ServeOptions) -> Result<()> {
    serve(model, opts, stop_signal(), |addr| {
        use std::io::Write;
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
    })
}

/// A server running on a background thread (benchmarks, tests in this crate).
pub struct Running {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<Result<()>>,
}

impl Running {
    /// Drains and stops the server.
    pub fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the server thread panicked"))?
    }
}

/// Starts a server on a background thread; returns once it accepts requests.
pub fn start(model: Model, opts: &ServeOptions) -> Result<Running> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let opts = opts.clone();
    let thread = std::thread::Builder::new()
        .name("gptsan-serve".into())
        .spawn(move || {
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve(model, &opts, shutdown, move |addr| {
                let _ = bound_tx.send(addr);
            })
        })?;
    match bound_rx.recv() {
        Ok(addr) => Ok(Running { addr, stop, thread }),
        Err(_) => Err(thread
            .join()
            .map_err(|_| anyhow::anyhow!("the server thread panicked"))?
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the server stopped before listening"))),
    }
}

/// Starts the engine, binds, serves until `shutdown`, then lets the engine finish.
fn serve(
    model: Model,
    opts: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<()> {
    let tok = model.tok.clone();
    let cfg = model.cfg.clone();
    let engine = engine::spawn(model, opts.plugin.clone(), opts.max_batch, opts.max_queue)?;
    tracing::info!("engine on {}", engine.device);
    let state = Arc::new(http::AppState {
        jobs: engine.jobs(),
        active: engine.active(),
        tok,
        cfg,
        model: opts.model_name.clone(),
        max_batch: opts.max_batch,
        next_id: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
        on_bound(listener.local_addr()?);
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(shutdown)
            .await
            .context("the server failed")
    });
    // Tasks left in the runtime may still hold a job sender; the engine stops once all
    // are gone.
    drop(runtime);
    engine.shutdown();
    served
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("stopping: finishing the requests in flight");
}
