//! Training: optimizers, schedules, the compiled train step, checkpoints and the loop.

mod batches;
pub mod checkpoint;
pub mod config;
mod eval;
pub mod extend;
pub mod freeze;
pub mod loss_scale;
pub mod metrics;
pub mod optimizer;
pub mod plot;
pub mod run;
pub mod run_dir;
mod samples;
pub mod setup;
mod state;
pub mod step;
mod trainer;
