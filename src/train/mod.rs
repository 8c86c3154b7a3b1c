//! Training: optimizers, schedules and the compiled train step.

pub mod optimizer;
pub mod step;
