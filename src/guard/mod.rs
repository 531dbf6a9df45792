//! Where guards are evaluated: `assess` decides (pure), `reconciler` queries Prometheus,
//! applies the decision and writes the guard's status once per evaluation.

pub mod assess;
pub mod fairness;
pub mod reconciler;
