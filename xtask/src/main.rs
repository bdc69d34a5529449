//! slabtrace's developer tasks. `cargo xtask --help` lists them.
//!
//! Each task installs the BPF toolchain pieces it needs first (nightly's rust-src and
//! bpf-linker 0.10.0), so the README's two commands work on a fresh machine.

mod bench;
mod image;
mod setup;
mod vm;

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

/// Developer tasks for slabtrace.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building the BPF programs needs (idempotent).
    Setup,
    /// Build slabtrace (release) and run it with these arguments; needs root.
    Run {
        /// Arguments for slabtrace, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Unit tests, lints, then the root integration tests against the real kernel.
    Test {
        /// Only the unit tests and lints (no root needed).
        #[arg(long)]
        unit_only: bool,
        /// Passed to the integration test binary (a test name filter, for example).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Overhead per traced event: no tracer vs an empty BPF program vs slabtrace; needs root.
    Bench(bench::BenchArgs),
    /// The container image (scratch + a static binary built here) with podman, buildah or
    /// docker; no registry needed.
    Image(image::ImageArgs),
    /// The kernel-side integration tests in qemu VMs, on each kernel of the matrix (Debian's
    /// own kernel packages), as a cgroup-v2-only node.
    Vm(vm::VmArgs),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::ensure_toolchain(),
        Task::Run { args } => run(&args),
        Task::Test { unit_only, args } => test(unit_only, &args),
        Task::Bench(args) => bench::run(&args),
        Task::Image(args) => image::run(&args),
        Task::Vm(args) => vm::run(&args),
    }
}

/// Runs a command, failing with its name if it fails.
pub(crate) fn cmd(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    setup::ensure_toolchain()?;
    cmd("cargo", &["build", "--release", "--package", "slabtrace"])?;
    let bin = setup::workspace_root()?.join("target/release/slabtrace");
    let status = Command::new(&bin)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

fn test(unit_only: bool, args: &[String]) -> Result<()> {
    setup::ensure_toolchain()?;
    // Unit tests: pure logic on fixtures, no root needed.
    cmd(
        "cargo",
        &[
            "test",
            "--workspace",
            "--exclude",
            "slabtrace-ebpf",
            "--exclude",
            "slabtrace-integration",
        ],
    )?;
    cmd(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "slabtrace-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    if unit_only {
        return Ok(());
    }
    if setup::is_root() {
        setup::ensure_packages(setup::TEST_PACKAGES)?;
    } else {
        bail!(
            "the integration tests load BPF programs and create cgroups: run `sudo -E cargo xtask test` (or `cargo xtask test --unit-only`)"
        );
    }
    // The integration tests run the real binary; build it first so they test this tree.
    cmd("cargo", &["build", "--package", "slabtrace"])?;
    // And the image of it, which tests/tests/image.rs deploys through containerd's CRI.
    let archive = setup::workspace_root()?.join(image::TEST_ARCHIVE);
    image::run(&image::ImageArgs { tag: None, builder: None, output: Some(archive.clone()) })?;
    let status = Command::new("cargo")
        .args(["test", "--package", "slabtrace-integration", "--"])
        // One at a time: each test owns the node's slab counts while it runs.
        .arg("--test-threads=1")
        .args(args)
        .env(image::ARCHIVE_ENV, &archive)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("the integration tests failed ({status})");
    }
    Ok(())
}
