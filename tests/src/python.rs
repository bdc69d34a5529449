//! The engines the deploy tests drive through Python, offline: Helm's (tests/helm/chart.py)
//! and Vector's remap language (tests/vector/vrl.py), from the virtualenv `cargo xtask test`
//! makes (target/python, from tests/python/requirements.txt). Each script reads one JSON
//! request on standard input and writes one JSON answer.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// The variable that names another Python with the packages installed.
pub const PYTHON_ENV: &str = "SLABTRACE_TEST_PYTHON";

/// The repository's root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The virtualenv's Python: [`PYTHON_ENV`], else where `cargo xtask test` puts it.
fn python() -> Result<PathBuf> {
    let path = std::env::var_os(PYTHON_ENV)
        .map_or_else(|| repo().join("target/python/bin/python3"), PathBuf::from);
    if !path.is_file() {
        bail!(
            "the deploy tests' Python tools are not installed ({} is missing): `cargo xtask \
             test` installs them (tests/python/requirements.txt), or set {PYTHON_ENV}",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `script` (relative to the repository) with `request`; its JSON answer. A failing
/// script's standard error is the error.
pub fn call(script: &str, request: &Value) -> Result<Value> {
    let script = repo().join(script);
    let mut child = Command::new(python()?)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    stdin.write_all(request.to_string().as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} answered no JSON", script.display()))
}
