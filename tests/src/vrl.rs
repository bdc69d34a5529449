//! Vector's remap language (VRL), by its own compiler and runtime (the Python package
//! `pyVRL`, Vector's `vrl` crate), driven by tests/vector/vrl.py: the Vector config's
//! `remap` program run on real event lines, with no Vector. No network.

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

/// What a `remap` transform does with one event.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Passed on, as the program left it.
    Event(Value),
    /// `abort`ed: dropped (`drop_on_abort: true`).
    Aborted,
    /// Failed at run time.
    Error(String),
}

/// Compiles `program` as Vector's `remap` would and runs it on each of `events`.
pub fn remap(program: &str, events: &[Value]) -> Result<Vec<Outcome>> {
    let answer = crate::python::call(
        "tests/vector/vrl.py",
        &json!({ "program": program, "events": events }),
    )?;
    let outcomes = answer["outcomes"].as_array().context("no outcomes")?;
    if outcomes.len() != events.len() {
        bail!("{} outcomes for {} events", outcomes.len(), events.len());
    }
    Ok(outcomes
        .iter()
        .map(|o| {
            if let Some(e) = o.get("event") {
                Outcome::Event(e.clone())
            } else if o.get("aborted").is_some() {
                Outcome::Aborted
            } else {
                Outcome::Error(o["error"].as_str().unwrap_or_default().to_owned())
            }
        })
        .collect())
}
