//! Where guards are evaluated: `assess` decides (pure), `reconciler` queries Prometheus,
//! applies the decision and writes the guard's status when `writes` says it is due.

pub mod assess;
pub mod fairness;
pub mod reconciler;
pub mod writes;
