//! slabtrace's developer tasks. `cargo xtask --help` lists them.
//!
//! Each task installs the BPF toolchain pieces it needs first (nightly's rust-src and
//! bpf-linker 0.10.0), so the README's two commands work on a fresh machine.

mod bench;
mod image;
mod scale;
mod setup;
mod soak;
mod vm;

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};
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
        /// Run the integration tests next to `stress-ng --cpu N` (installed if missing): a
        /// test that passes only on an idle machine fails here, as it would on a busy CI
        /// machine.
        #[arg(long, value_name = "N")]
        under_load: Option<u32>,
        /// Leave out the kernel matrix (`cargo xtask vm`), which otherwise runs beside the
        /// root integration tests.
        #[arg(long)]
        no_vm: bool,
        /// Passed to the integration test binary (a test name filter, for example).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Overhead per traced event: no tracer vs an empty BPF program vs slabtrace (and, with
    /// --ablation, slabtrace without each part), from the wall clock and from the kernel's own
    /// per-program accounting; needs root.
    Bench(bench::BenchArgs),
    /// The container image (scratch + a static binary built here) with podman, buildah or
    /// docker; no registry needed.
    Image(image::ImageArgs),
    /// The kernel-side integration tests in qemu VMs, on each kernel of the matrix (Debian's
    /// own kernel packages), as a cgroup-v2-only node.
    Vm(vm::VmArgs),
    /// The property tests of every parser of outside input and every encoder of untrusted
    /// strings (slabtrace/src/properties.rs), longer than `test` runs them: arbitrary text
    /// and bytes, no panics. No root needed.
    Fuzz {
        /// Cases per property (`test` runs 256).
        #[arg(long, default_value_t = 100_000)]
        cases: u32,
    },
    /// The daemon over time under cgroup churn, OOM kills, silent HTTP clients and a slow
    /// event consumer: a table a minute of its RSS, CPU, keys and drops; fails unless they stay
    /// flat and nothing is lost. Needs root; not on a Kubernetes node.
    Soak {
        /// How long.
        #[arg(long, default_value_t = 30)]
        minutes: u32,
        /// The daemon's growth window, in minutes: its growth histories fill over it, so RSS
        /// and CPU are judged flat only from the minute after it (the daemon's default is 30).
        #[arg(long, default_value_t = 5)]
        growth_window_minutes: u32,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::ensure_toolchain(),
        Task::Run { args } => run(&args),
        Task::Test { unit_only, under_load, no_vm, args } => {
            test(unit_only, under_load, no_vm, &args)
        }
        Task::Bench(args) if args.scale => scale::run(scale::ScaleArgs {
            cgroups: args.cgroups,
            caches: args.caches,
            intervals: args.intervals,
        }),
        Task::Bench(args) => bench::run(&args),
        Task::Image(args) => image::run(&args),
        Task::Vm(args) => vm::run(&args),
        Task::Fuzz { cases } => fuzz(cases),
        Task::Soak { minutes, growth_window_minutes } => soak::run(minutes, growth_window_minutes),
    }
}

/// `cargo test` of the property tests with `cases` cases each.
fn fuzz(cases: u32) -> Result<()> {
    setup::ensure_toolchain()?;
    let status = Command::new("cargo")
        .args(["test", "--release", "-p", "slabtrace", "--lib", "--"])
        // The properties module, and the metrics encoder's label round trip beside its helpers.
        .args(["properties::", "any_label_value_round_trips"])
        .env("PROPTEST_CASES", cases.to_string())
        .status()
        .context("cannot run cargo")?;
    ensure!(status.success(), "a property test failed ({status}): its minimal input is above");
    Ok(())
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

/// The unit tests (pure logic on fixtures, no root needed) and the lints: the host crates with
/// stable clippy, the BPF crate with nightly's, for the only target it builds for.
fn unit_tests_and_lints() -> Result<()> {
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
    cmd(
        "cargo",
        &[
            "+nightly",
            "clippy",
            "--package",
            "slabtrace-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ],
    )
}

fn test(unit_only: bool, under_load: Option<u32>, no_vm: bool, args: &[String]) -> Result<()> {
    setup::ensure_toolchain()?;
    unit_tests_and_lints()?;
    if unit_only {
        return Ok(());
    }
    if setup::is_root() {
        setup::ensure_packages(setup::TEST_PACKAGES)?;
        setup::ensure_python_tools()?;
    } else {
        bail!(
            "the integration tests load BPF programs and create cgroups: run `sudo -E cargo xtask test` (or `cargo xtask test --unit-only`)"
        );
    }
    // The unit tests that read the live kernel (/proc/slabinfo, BTF, cgroup2, kallsyms) are
    // ignored by a plain `cargo test`, which needs no root; here, as root, they must pass.
    cmd("cargo", &["test", "--package", "slabtrace", "--lib", "--", "--ignored"])?;
    // The integration tests run the real binary; build it first so they test this tree.
    cmd("cargo", &["build", "--package", "slabtrace"])?;
    // And the image of it, which tests/tests/image.rs deploys through containerd's CRI.
    let archive = setup::workspace_root()?.join(image::TEST_ARCHIVE);
    image::run(&image::ImageArgs { tag: None, builder: None, output: Some(archive.clone()) })?;
    // The kernel matrix: the same kernel-side tests in VMs of the other kernels nodes run,
    // side by side with the root suite here (both spend most of their time waiting).
    // A name filter narrows both.
    let vm_args = vm::VmArgs {
        kernels: Vec::new(),
        tests: args.iter().filter(|a| !a.starts_with('-')).cloned().collect(),
        list: false,
        timeout: 600,
        kvm: false,
        refresh: false,
        jobs: vm::kernels::KERNELS.len(),
    };
    let prepared = if no_vm { None } else { vm::prepare(&vm_args)? };
    let load = under_load.map(Load::start).transpose()?;
    let (summary, vm_lines) = std::thread::scope(|s| {
        let matrix = prepared.map(|p| s.spawn(move || p.run(false)));
        let summary = run_integration_tests(args, &archive);
        let vm_lines = matrix
            .map(|m| m.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the VM runner panicked"))));
        (summary, vm_lines)
    });
    drop(load);
    let summary = summary?;
    let root = setup::workspace_root()?;
    let expected = if args.iter().any(|a| !a.starts_with('-')) {
        None // a name filter: only some of them were meant to run
    } else {
        Some(count_tests(&root.join("tests"))?)
    };
    let mut lines = vec![summary.line(expected)];
    let vm_result = match vm_lines {
        Some(Ok(vm)) => {
            lines.extend(vm);
            Ok(())
        }
        Some(Err(e)) => {
            lines.push(format!("vm tests: {e:#}"));
            Err(e)
        }
        None => {
            lines.push("vm tests: left out (--no-vm)".to_owned());
            Ok(())
        }
    };
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(root.join(SUMMARY_FILE), &text).with_context(|| format!("writing {SUMMARY_FILE}"))?;
    for line in &lines {
        eprintln!("xtask: {line}");
    }
    summary.check(expected)?;
    vm_result
}

/// `stress-ng --cpu N` for as long as this lives.
struct Load(std::process::Child);

impl Load {
    fn start(cpus: u32) -> Result<Self> {
        setup::ensure_packages(setup::LOAD_PACKAGES)?;
        eprintln!("xtask: the integration tests run next to `stress-ng --cpu {cpus}`");
        let child = Command::new("stress-ng")
            .args(["--cpu", &cpus.to_string(), "--quiet"])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot run stress-ng")?;
        Ok(Self(child))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // SIGTERM, so that stress-ng stops its workers too (SIGKILL would orphan them).
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill with a pid this process started and has not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.0.wait();
    }
}

/// Where `cargo xtask test` writes what the integration tests did, for `.ci/run` to check.
const SUMMARY_FILE: &str = "target/integration-tests.summary";

/// The test files of tests/tests the root suite here runs: all but the VM-only ones
/// ([`vm::VM_ONLY_TESTS`]), which the kernel matrix runs.
fn host_test_files(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("tests/tests");
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned())
            && !vm::VM_ONLY_TESTS.iter().any(|(name, _)| *name == stem)
        {
            files.push(stem);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs the root integration tests, passing their output through, and counts what they did.
fn run_integration_tests(args: &[String], archive: &Path) -> Result<TestSummary> {
    let root = setup::workspace_root()?;
    let _ = fs::remove_file(root.join(SUMMARY_FILE));
    // The library's and binaries' own tests, and each test file but the VM-only ones.
    let targets: Vec<String> = ["--lib".to_owned(), "--bins".to_owned()]
        .into_iter()
        .chain(host_test_files(&root)?.into_iter().flat_map(|f| ["--test".to_owned(), f]))
        .collect();
    let mut child = Command::new("cargo")
        // Every binary, even after a failure: CI shows all that is broken at once.
        .args(["test", "--no-fail-fast", "--package", "slabtrace-integration"])
        .args(&targets)
        .arg("--")
        // One at a time: each test owns the node's slab counts while it runs.
        .arg("--test-threads=1")
        .args(args)
        .env(image::ARCHIVE_ENV, archive)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let mut summary = TestSummary::default();
    let stdout = child.stdout.take().context("no stdout from cargo test")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        summary.add_line(&line);
    }
    summary.succeeded = child.wait()?.success();
    Ok(summary)
}

/// What the test harness said, over all the integration test binaries.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestSummary {
    passed: u64,
    failed: u64,
    ignored: u64,
    binaries: u64,
    succeeded: bool,
}

impl TestSummary {
    /// Adds a libtest summary line (`test result: ok. 3 passed; 0 failed; 1 ignored; …`).
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        self.binaries += 1;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }

    fn line(&self, expected: Option<u64>) -> String {
        let expected = expected.map_or_else(|| "a filter".to_owned(), |n| n.to_string());
        format!(
            "integration tests: {} passed, {} failed, {} ignored in {} binaries (expected: {expected})",
            self.passed, self.failed, self.ignored, self.binaries
        )
    }

    /// Fails unless the tests passed, ran at all, skipped none, and (without a filter) every
    /// test in tests/tests ran: a suite that silently ran nothing must not look green.
    fn check(&self, expected: Option<u64>) -> Result<()> {
        if !self.succeeded || self.failed > 0 {
            bail!("the integration tests failed: {}", self.line(expected));
        }
        if self.passed == 0 {
            bail!("no integration test ran: {}", self.line(expected));
        }
        if self.ignored > 0 {
            bail!("integration tests were skipped (#[ignore]): {}", self.line(expected));
        }
        if let Some(n) = expected.filter(|&n| n != self.passed) {
            bail!("{} integration tests passed, but tests/ has {n}", self.passed);
        }
        Ok(())
    }
}

/// The number of `#[test]` functions in the Rust sources under `dir`, recursively: the
/// integration tests and the unit tests of their helpers, which run in the same phase; the
/// VM-only test files ([`vm::VM_ONLY_TESTS`]) are not counted, since the kernel matrix runs
/// them instead (and fails unless they pass on every kernel).
fn count_tests(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let vm_only = path.parent().is_some_and(|p| p.ends_with("tests/tests"))
            && path.file_stem().is_some_and(|stem| {
                vm::VM_ONLY_TESTS.iter().any(|(name, _)| stem.to_string_lossy() == *name)
            });
        if vm_only {
            continue;
        }
        if path.is_dir() {
            n += count_tests(&path)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path)?;
            n += text.lines().filter(|l| l.trim() == "#[test]").count() as u64;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_add_up_over_binaries() {
        let mut s = TestSummary::default();
        for line in [
            "running 2 tests",
            "test a ... ok",
            "test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 3.01s",
            "test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out",
        ] {
            s.add_line(line);
        }
        assert_eq!(
            s,
            TestSummary { passed: 6, failed: 2, ignored: 1, binaries: 3, succeeded: false }
        );
    }

    #[test]
    fn the_host_runs_every_test_file_but_the_vm_only_ones() -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let files = host_test_files(&root)?;
        assert!(files.iter().any(|f| f == "privileges"), "{files:?}");
        for (vm_only, _) in vm::VM_ONLY_TESTS {
            assert!(!files.iter().any(|f| f == vm_only), "{vm_only} in {files:?}");
            assert!(root.join(format!("tests/tests/{vm_only}.rs")).is_file(), "{vm_only}");
        }
        // And they are not counted: a file's tests are counted only where they run.
        let all = count_tests(&root.join("tests"))?;
        let vm_only: u64 = vm::VM_ONLY_TESTS
            .iter()
            .map(|(name, _)| {
                let text = fs::read_to_string(root.join(format!("tests/tests/{name}.rs")))?;
                Ok(text.lines().filter(|l| l.trim() == "#[test]").count() as u64)
            })
            .sum::<Result<u64>>()?;
        assert!(vm_only > 0);
        let mut counted_by_hand = 0;
        for entry in fs::read_dir(root.join("tests/tests"))? {
            let path = entry?.path();
            let text = fs::read_to_string(&path)?;
            counted_by_hand += text.lines().filter(|l| l.trim() == "#[test]").count() as u64;
        }
        assert_eq!(all + vm_only, counted_by_hand + count_tests(&root.join("tests/src"))?);
        Ok(())
    }

    #[test]
    fn a_run_of_nothing_or_of_fewer_than_expected_fails() {
        let ok =
            |passed| TestSummary { passed, binaries: 1, succeeded: true, ..Default::default() };
        assert!(ok(0).check(None).is_err());
        assert!(ok(3).check(Some(4)).is_err());
        assert!(ok(4).check(Some(4)).is_ok());
        assert!(ok(2).check(None).is_ok());
        let skipped = TestSummary { ignored: 1, ..ok(4) };
        assert!(skipped.check(Some(4)).is_err());
    }
}
