//! `helm template` and `helm lint` for the tests, by Helm's own engine: Helm v4 compiled as a
//! shared library (the Python package `helm-python-sdk`), driven by tests/helm/chart.py in the
//! virtualenv that `cargo xtask test` makes ([`crate::python`]). No helm binary, no cluster, no
//! network.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

/// The release a chart is rendered for (`helm template NAME --namespace NAMESPACE`).
#[derive(Clone, Debug)]
pub struct Release {
    /// `.Release.Name`.
    pub name: String,
    /// `.Release.Namespace`.
    pub namespace: String,
}

/// What a chart rendered to.
#[derive(Debug)]
pub struct Rendered {
    /// Each template's output (`templates/daemonset.yaml` → its YAML), in file-name order,
    /// helpers and NOTES.txt left out.
    pub manifests: BTreeMap<String, String>,
    /// templates/NOTES.txt, rendered.
    pub notes: Option<String>,
    /// The values after the overrides were merged in, by Helm.
    pub values: Value,
}

/// One finding of `helm lint`.
#[derive(Debug)]
pub struct LintMessage {
    /// Helm's severity: 1 info, 2 warning, 3 error.
    pub severity: u64,
    /// The file it is about.
    pub path: String,
    /// What it says.
    pub text: String,
}

/// Helm's severity of a warning; strict lint fails on it and on errors.
pub const WARNING: u64 = 2;

/// Runs tests/helm/chart.py with `request`; its JSON answer.
fn call(request: &Value) -> Result<Value> {
    crate::python::call("tests/helm/chart.py", request)
}

/// Renders the chart in `dir` for `release`, with `overrides` merged into its values.yaml by
/// Helm (as `helm template -f overrides.yaml` would).
pub fn render(dir: &Path, release: &Release, overrides: &Value) -> Result<Rendered> {
    let answer = call(&json!({
        "command": "render",
        "chart": dir,
        "name": release.name,
        "namespace": release.namespace,
        "values": overrides,
    }))?;
    let mut manifests = BTreeMap::new();
    let mut notes = None;
    for (name, text) in answer["manifests"].as_object().context("no manifests")? {
        let text = text.as_str().context("a manifest that is not text")?.to_owned();
        // Helm names them `<chart>/templates/<file>`.
        let name = name.split_once('/').map_or(name.as_str(), |(_, rest)| rest);
        if name.ends_with("NOTES.txt") {
            notes = Some(text);
        } else {
            manifests.insert(name.to_owned(), text);
        }
    }
    Ok(Rendered { manifests, notes, values: answer["values"].clone() })
}

/// `helm lint --strict` of the chart in `dir` with `overrides`, for Kubernetes `kube_version`.
pub fn lint(
    dir: &Path,
    namespace: &str,
    overrides: &Value,
    kube_version: &str,
) -> Result<Vec<LintMessage>> {
    let answer = call(&json!({
        "command": "lint",
        "chart": dir,
        "namespace": namespace,
        "values": overrides,
        "strict": true,
        "kube_version": kube_version,
    }))?;
    let mut found = Vec::new();
    for m in answer["messages"].as_array().into_iter().flatten() {
        found.push(LintMessage {
            severity: m["severity"].as_u64().unwrap_or(0),
            path: m["path"].as_str().unwrap_or_default().to_owned(),
            text: m["error"].as_str().unwrap_or_default().to_owned(),
        });
    }
    for e in answer["errors"].as_array().into_iter().flatten() {
        let text = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
        found.push(LintMessage { severity: 3, path: String::new(), text });
    }
    Ok(found)
}
