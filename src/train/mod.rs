//! Training: optimizers, schedules, the compiled train step, checkpoints and the loop.

pub mod checkpoint;
pub mod config;
pub mod optimizer;
pub mod run;
pub mod step;
