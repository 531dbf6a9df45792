//! Where the rollback state machine lives: `step` decides (pure), `reconciler` executes
//! one step at a time and records each in status before the next begins.

pub mod history;
pub mod hooks;
pub mod ready;
pub mod reconciler;
pub mod slot_lease;
pub mod snapshot;
pub mod step;
