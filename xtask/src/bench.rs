//! Placeholder: being written.
use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: &BenchArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
