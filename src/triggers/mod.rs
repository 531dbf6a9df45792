//! Where triggers are evaluated: a pure judgement of one trigger's query result (and
//! baseline) against its comparison (SPEC §2 "Trigger evaluation"); alert triggers are
//! judged in [`crate::alerts`] into the same [`Reading`]. Errors never reach here: a failed
//! query is not a reading, and never a breach.

pub mod window;

use crate::api::guard::{NoDataPolicy, Trigger};
use std::collections::BTreeMap;

/// One series of an instant-vector result.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Series {
    pub fn new(value: f64) -> Self {
        Self {
            labels: BTreeMap::new(),
            value,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comparison {
    Above(f64),
    Below(f64),
    IncreaseAbove(f64),
    DecreaseBelow(f64),
}

impl Comparison {
    /// The trigger's one comparison (the CRD schema enforces exactly one).
    pub fn of(trigger: &Trigger) -> Option<Self> {
        trigger
            .above
            .map(Self::Above)
            .or(trigger.below.map(Self::Below))
            .or(trigger.increase_above.map(Self::IncreaseAbove))
            .or(trigger.decrease_below.map(Self::DecreaseBelow))
    }

    pub fn threshold(self) -> f64 {
        match self {
            Self::Above(t) | Self::Below(t) | Self::IncreaseAbove(t) | Self::DecreaseBelow(t) => t,
        }
    }

    fn is_relative(self) -> bool {
        matches!(self, Self::IncreaseAbove(_) | Self::DecreaseBelow(_))
    }

    /// How bad a measure is: larger is worse, so the worst series is the maximum.
    fn badness(self, measure: f64) -> f64 {
        match self {
            Self::Above(_) | Self::IncreaseAbove(_) | Self::DecreaseBelow(_) => measure,
            Self::Below(_) => -measure,
        }
    }

    fn breaches(self, measure: f64) -> bool {
        match self {
            Self::Above(t) | Self::IncreaseAbove(t) | Self::DecreaseBelow(t) => measure > t,
            Self::Below(t) => measure < t,
        }
    }
}

/// The judgement of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The worst series' value (None: no usable data).
    pub value: Option<f64>,
    /// Its baseline (relative comparisons).
    pub baseline: Option<f64>,
    pub labels: BTreeMap<String, String>,
    pub breaching: bool,
    /// No usable series: empty result, NaN, or no matching non-zero baseline.
    pub no_data: bool,
    /// Alert triggers: the matching alert shown (the oldest firing one).
    pub alert: Option<crate::api::request::TriggeringAlert>,
}

/// Judges `current` (and, for relative comparisons, `baseline`) against the trigger.
/// Several series: any breaching series breaches, and the reading shows the worst. NaN
/// values are no data; ±Inf compare as numbers. A missing, zero or NaN baseline is no data
/// for that series, never a division by zero.
pub fn evaluate(trigger: &Trigger, current: &[Series], baseline: &[Series]) -> Reading {
    let Some(comparison) = Comparison::of(trigger) else {
        return no_data(trigger);
    };
    // (measure compared with the threshold, value, baseline, labels)
    type Candidate<'a> = (f64, f64, Option<f64>, &'a BTreeMap<String, String>);
    let mut candidates: Vec<Candidate> = Vec::new();
    for series in current.iter().filter(|s| !s.value.is_nan()) {
        if !comparison.is_relative() {
            candidates.push((series.value, series.value, None, &series.labels));
            continue;
        }
        let base = match baseline {
            [only] => Some(only.value),
            many => many
                .iter()
                .find(|b| b.labels == series.labels)
                .map(|b| b.value),
        };
        let Some(base) = base.filter(|b| b.is_finite() && *b != 0.0) else {
            continue;
        };
        let change = match comparison {
            Comparison::IncreaseAbove(_) => (series.value - base) / base.abs(),
            _ => (base - series.value) / base.abs(),
        };
        if !change.is_nan() {
            candidates.push((change, series.value, Some(base), &series.labels));
        }
    }
    let worst = candidates
        .into_iter()
        .max_by(|a, b| comparison.badness(a.0).total_cmp(&comparison.badness(b.0)));
    match worst {
        Some((measure, value, base, labels)) => Reading {
            value: Some(value),
            baseline: base,
            labels: labels.clone(),
            breaching: comparison.breaches(measure),
            no_data: false,
            alert: None,
        },
        None => no_data(trigger),
    }
}

fn no_data(trigger: &Trigger) -> Reading {
    Reading {
        value: None,
        baseline: None,
        labels: BTreeMap::new(),
        breaching: trigger.no_data == Some(NoDataPolicy::Breach),
        no_data: true,
        alert: None,
    }
}

#[cfg(test)]
mod tests;
