//! The report: schema `slabtrace.report.v1`. Every field is documented here and in the README;
//! fields are only ever added, never renamed, within a schema version. A report is an
//! [`Observation`] (its fields, flat) with the findings drawn from it.

use std::ops::{Deref, DerefMut};

use serde::Serialize;

use crate::attribution::CgroupUsage;

pub use crate::observation::{
    KernelMemory, MeminfoChange, NodeCache, Observation, Sampling, SelfStats, SlabinfoChange,
};

/// The schema id every report carries.
pub const SCHEMA: &str = "slabtrace.report.v1";

/// A report over one tracing window.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: std::borrow::Cow<'static, str>,
    /// What was observed.
    #[serde(flatten)]
    pub observation: Observation,
    /// Problematic growth found so far, still open: per pod or cgroup × cache (`owner`) and
    /// per cache node-wide (`owner: null`), fastest first. Only the daemon and `top` watch
    /// growth (it needs a history); `report` leaves this empty.
    pub growth: Vec<crate::node::growth::GrowthFinding<crate::frame::Owner>>,
    /// What reclaim did over the growth window (daemon and `top`), per kind of shrinker, the
    /// most scanned first: `scan_fn` (`super_cache_scan` shrinks a filesystem's dentries and
    /// inodes), `shrinkers`, `calls`, `scanned`, `freed`.
    pub reclaim: Vec<crate::node::shrinkers::ShrinkerSummary>,
    /// Kubelet reservations sized from the kernel memory no pod was charged for while
    /// tracing (the daemon: over the last day, and its peak since start), with the evidence.
    pub advice: Option<crate::advice::Advice>,
    /// OOM kills since tracing started, by scope (`global`, `memcg`, `unknown`).
    pub oom_kills_total: std::collections::BTreeMap<String, u64>,
    /// OOM kills while tracing (the last 100), each with the slab picture at the time.
    pub oom_kills: Vec<crate::oom_report::OomReport>,
    /// Problematic slow growth still open, judged over days by the daemon's long view, which
    /// survives its restarts (`--history-file`): the node's Slab and `SUnreclaim`, and pods'
    /// charged slab. Empty elsewhere.
    #[serde(default)]
    pub slow_growth: Vec<crate::node::slow_growth::SlowFinding>,
}

impl Report {
    /// A report as JSON (a daemon's `/report`), with what the JSON leaves out but can be
    /// derived again (what each cgroup path is).
    pub fn parse(json: &[u8]) -> serde_json::Result<Self> {
        let mut report: Self = serde_json::from_slice(json)?;
        report.observation.cgroups.iter_mut().for_each(CgroupUsage::identify);
        Ok(report)
    }
}

impl Deref for Report {
    type Target = Observation;

    fn deref(&self) -> &Observation {
        &self.observation
    }
}

impl DerefMut for Report {
    fn deref_mut(&mut self) -> &mut Observation {
        &mut self.observation
    }
}

/// The report's JSON Schema, derived from the types that serialize it (their doc comments are
/// its descriptions): what `schema/slabtrace.report.v1.json` publishes.
#[must_use]
pub fn json_schema() -> String {
    // What slabtrace writes, not what it would read: a field left out when empty is optional.
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<Report>();
    schema.insert("$id".into(), "https://slabtrace.dev/schema/slabtrace.report.v1.json".into());
    schema.insert("title".into(), "slabtrace report, version 1".into());
    schema.insert(
        "description".into(),
        "What `slabtrace report --format json` prints and the daemon serves at /report. Byte \
         figures are bytes, counts are objects; figures marked estimated come from 1-in-N \
         address sampling (`sampling.rate`). Fields are only added within a version."
            .into(),
    );
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published schema is the one the types give; `SLABTRACE_WRITE_SCHEMA=1 cargo test
    /// -p slabtrace --lib published_schema` writes it anew after a change.
    #[test]
    fn the_published_schema_is_the_reports_own() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/slabtrace.report.v1.json");
        let generated = json_schema();
        if std::env::var_os("SLABTRACE_WRITE_SCHEMA").is_some() {
            std::fs::write(path, &generated).expect("write the schema");
        }
        let published = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            published == generated,
            "{path} is not what the report's types give: run SLABTRACE_WRITE_SCHEMA=1 cargo test -p slabtrace --lib published_schema"
        );
    }
}
