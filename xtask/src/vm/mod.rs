//! `cargo xtask vm`: the root integration tests that need only a kernel, run on each kernel of
//! the matrix ([`kernels::KERNELS`]) in a qemu VM that is a cgroup-v2-only node with the memory
//! controller, as Kubernetes 1.25+ nodes are.
//!
//! Steps: install what is missing (qemu, e2fsprogs, …); build slabtrace, the workload, vm-init
//! and the test executables as static binaries (the image's build, `target/image`); fetch each
//! kernel's Debian package through a private apt; write one initramfs; then per kernel make a
//! fresh ext4 scratch disk, boot, stream the console and collect each test's result; print a
//! table and fail unless every planned test passed on every kernel. Everything lands under
//! `target/vm/`.

mod cpio;
mod initramfs;
pub(crate) mod kernels;
mod qemu;
mod report;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{image, setup};

/// The integration test files (tests/tests/*.rs) that run in VMs: those that need only the
/// kernel, the slabtrace binary and the workload.
pub const VM_TESTS: &[&str] = &[
    "advise",
    "attribution",
    "charged",
    "daemon",
    "errors",
    "events",
    "kernel_layout",
    "oom",
    "privileges",
    "restart",
    "shrinkers",
];

/// VM tests that the root suite on the host leaves out, and why: each needs a kernel feature
/// that every kernel of the matrix has and a development host need not.
pub const VM_ONLY_TESTS: &[(&str, &str)] = &[(
    "apparmor",
    "AppArmor enabled, which Debian's kernels are; this host's kernel may have none",
)];

/// The ones that do not, and why: each needs a userland the VM does not have.
pub const HOST_ONLY_TESTS: &[(&str, &str)] = &[
    ("cri", "a private containerd"),
    ("deploy", "helm and Kubernetes manifests checked on the host"),
    ("image", "podman and containerd"),
    ("metrics", "a real Prometheus"),
    ("pods", "a private containerd"),
    ("top", "tmux"),
];

/// Host programs the tests run, copied into the initramfs with their libraries.
const GUEST_TOOLS: &[&str] = &["mount", "umount", "setpriv", "apparmor_parser"];

/// Host directories copied whole into the initramfs: what `apparmor_parser` reads for the
/// container runtimes' profile (its ABI, `tunables/global` and `abstractions/base`, with what
/// they include), its configuration and the kernel features Debian's configuration pins policy
/// to.
const GUEST_TREES: &[&str] = &[
    "/etc/apparmor",
    "/usr/share/apparmor-features",
    "/etc/apparmor.d/abi",
    "/etc/apparmor.d/tunables",
    "/etc/apparmor.d/abstractions",
];

/// Where everything goes, under the workspace root.
const VM_DIR: &str = "target/vm";

/// `cargo xtask vm`.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Only this kernel of the matrix (repeatable); default: all of them.
    #[arg(long = "kernel", value_name = "NAME")]
    pub kernels: Vec<String>,
    /// Only tests whose `FILE::NAME` contains this (repeatable), e.g. `oom` or
    /// `attribution::frees`.
    #[arg(long = "test", value_name = "FILTER")]
    pub tests: Vec<String>,
    /// List the kernels and the test files that run in VMs, and exit.
    #[arg(long)]
    pub list: bool,
    /// Seconds a test may run in the guest before it is killed and counted as failed.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
    /// Use KVM (`/dev/kvm`) instead of TCG emulation; nested KVM hangs on some hosts.
    #[arg(long)]
    pub kvm: bool,
    /// Fetch the package lists again and the kernel packages they now name.
    #[arg(long)]
    pub refresh: bool,
    /// How many VMs run at once (each has two vCPUs and 2 GiB and more of memory).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
}

/// A test executable and the names of its tests to run.
struct TestBinary {
    /// Its file in tests/tests (`oom`).
    group: String,
    path: PathBuf,
    tests: Vec<String>,
}

/// `cargo xtask vm`: prepares the matrix and runs it, printing every console.
pub fn run(args: &VmArgs) -> Result<()> {
    match prepare(args)? {
        Some(prepared) => prepared.run(true).map(drop),
        None => Ok(()),
    }
}

/// Everything built and fetched for a run of the matrix.
pub struct Prepared<'a> {
    args: &'a VmArgs,
    fetched: Vec<kernels::Kernel>,
    planned: Vec<String>,
    vm_dir: PathBuf,
    initrd: PathBuf,
    memory_mib: u64,
    /// Held until the run ends.
    _lock: fs::File,
}

/// Fetches the kernels and builds the initramfs; None when `--list` was all that was asked.
pub fn prepare(args: &VmArgs) -> Result<Option<Prepared<'_>>> {
    let selected = kernels::select(&args.kernels)?;
    if args.list {
        for k in &selected {
            println!("kernel {:<6} {} from Debian {}", k.name, k.package, k.suite);
        }
        for group in VM_TESTS {
            println!("tests  {group}");
        }
        for (group, why) in VM_ONLY_TESTS {
            println!("vm     {group} (only in VMs: needs {why})");
        }
        for (group, why) in HOST_ONLY_TESTS {
            println!("host   {group} (needs {why})");
        }
        return Ok(None);
    }
    let root = setup::workspace_root()?;
    let vm_dir = root.join(VM_DIR);
    fs::create_dir_all(&vm_dir)?;
    let lock = lock(&vm_dir)?;
    setup::ensure_packages(setup::VM_PACKAGES)?;
    ensure!(
        setup::which("qemu-system-x86_64").is_some(),
        "qemu-system-x86_64 is missing: install Debian's qemu-system-x86 (as root, `cargo xtask \
         vm` does that itself)"
    );
    if args.kvm {
        ensure!(
            fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok(),
            "--kvm needs a usable /dev/kvm: leave it out to emulate with TCG"
        );
    }

    // Kernels first: a mirror problem shows before minutes of building.
    let mut fetched = Vec::new();
    for spec in &selected {
        fetched.push(fetch(*spec, &vm_dir, args.refresh)?);
    }

    setup::ensure_toolchain()?;
    let slabtrace = image::build_static_binary(&root, "slabtrace", "slabtrace")?;
    let (binaries, bins, out_dir) = build_tests(&root)?;
    let workload = bins.get("slab-workload").context("cargo built no slab-workload")?;
    let init = bins.get("vm-init").context("cargo built no vm-init")?;
    let binaries = select_tests(&binaries, &args.tests)?;
    let planned: Vec<String> = binaries
        .iter()
        .flat_map(|b| b.tests.iter().map(move |t| format!("{}::{t}", b.group)))
        .collect();
    ensure!(!planned.is_empty(), "no VM test matches {:?}", args.tests);
    eprintln!("xtask: {} tests on {} kernels", planned.len(), fetched.len());

    let initrd = vm_dir.join("initramfs.cpio");
    // Cargo's CARGO_TARGET_TMPDIR, which the tests have compiled in: `tmp` in the directory
    // of the triple's outputs.
    let target_tmpdir = out_dir.join("tmp");
    write_initramfs(
        &initrd,
        &root,
        &target_tmpdir,
        init,
        &slabtrace,
        workload,
        &binaries,
        args.timeout,
    )?;
    let initrd_mib = fs::metadata(&initrd)?.len() >> 20;
    // The initramfs stays in memory as the root filesystem; the OOM tests' limits are 64 MiB.
    let memory_mib = 2048 + initrd_mib;

    Ok(Some(Prepared { args, fetched, planned, vm_dir, initrd, memory_mib, _lock: lock }))
}

/// Takes `vm_dir` for this run: two runs would boot VMs on the same scratch disks and write
/// the same console logs.
fn lock(vm_dir: &Path) -> Result<fs::File> {
    use std::os::fd::AsRawFd as _;
    let path = vm_dir.join("lock");
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; the lock goes with the file.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    ensure!(
        taken,
        "another `cargo xtask vm` (or `cargo xtask test`) is using {}: wait for it to end",
        vm_dir.display()
    );
    Ok(file)
}

impl Prepared<'_> {
    /// Boots every kernel, `--jobs` at a time, prints the table and fails unless every test
    /// passed everywhere; returns a line per kernel for the record. `stream` prints every
    /// console line, else only the tests' results.
    pub fn run(self, stream: bool) -> Result<Vec<String>> {
        let Self { args, fetched, planned, vm_dir, initrd, memory_mib, _lock } = self;
        let started = Instant::now();
        let boot = |kernel: &kernels::Kernel| {
            let mut run = report::Run {
                kernel: kernel.spec.name.to_owned(),
                package: kernel.package.clone(),
                version: kernel.version.clone(),
                planned: planned.clone(),
                ..report::Run::default()
            };
            if let Err(e) = boot_one(kernel, &vm_dir, &initrd, memory_mib, args, stream, &mut run) {
                run.problem = Some(format!("{e:#}"));
            }
            run
        };
        // Kernels side by side, `--jobs` at a time: much of a test's time is waiting (RCU grace
        // periods, daemon intervals), which VMs can share.
        let queue =
            std::sync::Mutex::new(fetched.iter().collect::<std::collections::VecDeque<_>>());
        let mut runs: Vec<report::Run> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..args.jobs.max(1))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        while let Some(kernel) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                            done.push(boot(kernel));
                        }
                        done
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
        });
        // The list's order, whatever order the VMs ended in.
        runs.sort_by_key(|r| kernels::KERNELS.iter().position(|k| k.name == r.kernel));
        println!("\n{}", report::table(&runs));
        println!("matrix: {}s; console logs in {}", started.elapsed().as_secs(), vm_dir.display());
        let red: Vec<&str> =
            runs.iter().filter(|r| !r.green()).map(|r| r.kernel.as_str()).collect();
        if !red.is_empty() {
            bail!("the VM tests did not all pass on {}", red.join(", "));
        }
        Ok(runs
            .iter()
            .map(|r| {
                format!(
                    "vm tests on {} ({} {}): {} passed of {}",
                    r.kernel,
                    r.package,
                    r.version,
                    r.passed(),
                    r.planned.len()
                )
            })
            .collect())
    }
}

/// Boots `kernel` once with a fresh scratch disk, recording into `run`.
fn boot_one(
    kernel: &kernels::Kernel,
    vm_dir: &Path,
    initrd: &Path,
    memory_mib: u64,
    args: &VmArgs,
    stream: bool,
    run: &mut report::Run,
) -> Result<()> {
    // The NVMe driver and ext4 built in: a scratch disk without loading modules.
    let disk_ok = kernel.builtin("CONFIG_BLK_DEV_NVME") && kernel.builtin("CONFIG_EXT4_FS");
    let disk = vm_dir.join(format!("{}.scratch.img", kernel.spec.name));
    if disk_ok {
        make_scratch_disk(&disk)?;
    } else {
        eprintln!(
            "xtask: {} does not build in NVMe and ext4: no scratch disk, so $TMPDIR is a tmpfs",
            kernel.package
        );
    }
    let log = vm_dir.join(format!("{}.log", kernel.spec.name));
    eprintln!("xtask: booting {} ({} {})", kernel.spec.name, kernel.package, kernel.version);
    let booted = qemu::boot(
        &qemu::Boot {
            vmlinuz: &kernel.vmlinuz,
            initrd,
            disk: disk_ok.then_some(disk.as_path()),
            memory_mib,
            kvm: args.kvm,
            test_timeout: Duration::from_secs(args.timeout),
            log: &log,
            stream,
        },
        kernel.spec.name,
        run,
    );
    let _ = fs::remove_file(&disk);
    booted
}

/// Resolves, downloads and unpacks one kernel.
fn fetch(spec: kernels::KernelSpec, vm_dir: &Path, refresh: bool) -> Result<kernels::Kernel> {
    let apt = kernels::Apt::new(vm_dir, spec.suite)?;
    apt.update(refresh)?;
    let dir = vm_dir.join("kernels");
    let download = |resolved: &kernels::Resolved| -> Result<Vec<PathBuf>> {
        resolved
            .debs
            .iter()
            .map(|(package, version)| apt.download(package, version, &dir))
            .collect()
    };
    let mut resolved = apt.resolve(spec.package)?;
    let debs = match download(&resolved) {
        Ok(debs) => debs,
        // Lists from an earlier run may name a package the mirror has dropped since.
        Err(e) if !refresh => {
            eprintln!("xtask: {e:#}; fetching the package lists again");
            apt.update(true)?;
            resolved = apt.resolve(spec.package)?;
            download(&resolved)?
        }
        Err(e) => return Err(e),
    };
    let into = dir.join(&resolved.package);
    kernels::unpack(spec, resolved, &debs, &into)
}

/// `cargo test --no-run` of the integration tests, static: the test executables by file
/// (`oom` → path), the package's binaries by name, and the triple's output directory.
fn build_tests(root: &Path) -> Result<(Vec<TestBinary>, BTreeMap<String, PathBuf>, PathBuf)> {
    let (mut cargo, out_dir) = image::static_cargo(
        root,
        &[
            "test",
            "--package",
            "slabtrace-integration",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ],
    );
    let mut child = cargo.stdout(Stdio::piped()).spawn().context("cannot run cargo")?;
    let stdout = child.stdout.take().context("no output from cargo")?;
    let mut tests = Vec::new();
    let mut bins = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let message: Value = serde_json::from_str(&line?).unwrap_or_default();
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else { continue };
        let name = message["target"]["name"].as_str().unwrap_or_default().to_owned();
        let kinds = message["target"]["kind"].to_string();
        if kinds.contains("\"test\"") {
            tests.push(TestBinary { group: name, path: executable.into(), tests: Vec::new() });
        } else if kinds.contains("\"bin\"") && message["profile"]["test"] == false {
            bins.insert(name, PathBuf::from(executable));
        }
    }
    let status = child.wait()?;
    ensure!(status.success(), "building the integration tests failed ({status}): see above");
    for path in tests.iter().map(|t| &t.path).chain(bins.values()) {
        image::ensure_static(path)?;
    }
    Ok((tests, bins, out_dir))
}

/// The VM test files, each with the names of its tests that match `filters` (all without
/// filters); files with none left are dropped.
fn select_tests(binaries: &[TestBinary], filters: &[String]) -> Result<Vec<TestBinary>> {
    let mut selected = Vec::new();
    for group in VM_TESTS.iter().chain(VM_ONLY_TESTS.iter().map(|(group, _)| group)) {
        let binary = binaries.iter().find(|b| b.group == *group).with_context(|| {
            format!("cargo built no test executable for tests/tests/{group}.rs")
        })?;
        let out = Command::new(&binary.path)
            .args(["--list", "--format", "terse"])
            .output()
            .with_context(|| format!("running {} --list", binary.path.display()))?;
        ensure!(out.status.success(), "{} --list failed", binary.path.display());
        let names = test_names(&String::from_utf8_lossy(&out.stdout));
        let tests: Vec<String> = names.into_iter().filter(|t| matches(filters, group, t)).collect();
        if !tests.is_empty() {
            selected.push(TestBinary {
                group: (*group).to_owned(),
                path: binary.path.clone(),
                tests,
            });
        }
    }
    Ok(selected)
}

/// The tests in libtest's `--list --format terse` output (`name: test` lines).
fn test_names(list: &str) -> Vec<String> {
    list.lines().filter_map(|l| l.strip_suffix(": test")).map(str::to_owned).collect()
}

/// Whether `group::test` contains any of `filters` (or there are none).
fn matches(filters: &[String], group: &str, test: &str) -> bool {
    let full = format!("{group}::{test}");
    filters.is_empty() || filters.iter().any(|f| full.contains(f.as_str()))
}

/// The plan vm-init follows (its format is documented in tests/src/bin/vm-init.rs).
fn plan(binaries: &[TestBinary], timeout: u64) -> String {
    let mut plan = format!(
        "env SLABTRACE_BIN={}\nenv RUST_BACKTRACE=1\nenv TMPDIR={}\n\
         env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         mkdir {}\ntimeout {timeout}\n",
        initramfs::SLABTRACE,
        initramfs::TMPDIR,
        initramfs::TARGET_TMPDIR,
    );
    for b in binaries {
        let file = b.path.file_name().unwrap_or_default().to_string_lossy();
        for test in &b.tests {
            let _ = writeln!(plan, "test {} {}/deps/{file} {test}", b.group, initramfs::TESTS_DIR);
        }
    }
    plan
}

#[expect(clippy::too_many_arguments, reason = "the initramfs's parts, each named once here")]
fn write_initramfs(
    path: &Path,
    root: &Path,
    target_tmpdir: &Path,
    init: &Path,
    slabtrace: &Path,
    workload: &Path,
    binaries: &[TestBinary],
    timeout: u64,
) -> Result<()> {
    let mut initramfs = initramfs::Initramfs::create(path)?;
    initramfs.file(initramfs::INIT, init)?;
    initramfs.text(initramfs::PLAN, &plan(binaries, timeout))?;
    initramfs.file(initramfs::SLABTRACE, slabtrace)?;
    initramfs.file(&format!("{}/slab-workload", initramfs::TESTS_DIR), workload)?;
    for b in binaries {
        let file = b.path.file_name().unwrap_or_default().to_string_lossy();
        initramfs.file(&format!("{}/deps/{file}", initramfs::TESTS_DIR), &b.path)?;
    }
    // The tests find the published schemas at CARGO_MANIFEST_DIR/../schema and the event
    // stream's strict one at CARGO_MANIFEST_DIR/schema, paths of this host.
    initramfs.dir(&root.join("tests").to_string_lossy())?;
    initramfs.dir(&root.join("tests/schema").to_string_lossy())?;
    for dir in ["schema", "tests/schema"] {
        for entry in fs::read_dir(root.join(dir))? {
            let entry = entry?;
            initramfs.file(&entry.path().to_string_lossy(), &entry.path())?;
        }
    }
    initramfs.symlink(&target_tmpdir.to_string_lossy(), initramfs::TARGET_TMPDIR)?;
    for tool in GUEST_TOOLS {
        initramfs.host_program(tool)?;
    }
    for tree in GUEST_TREES {
        initramfs.host_tree(Path::new(tree))?;
    }
    initramfs.finish()?;
    Ok(())
}

/// A fresh sparse ext4 image, with only the features Linux 5.10 mounts.
fn make_scratch_disk(path: &Path) -> Result<()> {
    let _ = fs::remove_file(path);
    fs::File::create(path)?.set_len(4 << 30)?;
    // e2fsprogs 1.47 turns on `orphan_file`, which kernels before 5.15 refuse to mount; older
    // e2fsprogs do not know the name, so try without it when it is refused.
    for features in [&["-O", "^orphan_file"][..], &[]] {
        let status = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "scratch"])
            .args(features)
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .context("cannot run mkfs.ext4")?;
        if status.success() {
            return Ok(());
        }
    }
    bail!("mkfs.ext4 {} failed", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_file_is_either_a_vm_test_or_says_why_not() -> Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tests");
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let vm = VM_TESTS.contains(&stem.as_str());
            let vm_only = VM_ONLY_TESTS.iter().any(|(name, _)| *name == stem);
            let host = HOST_ONLY_TESTS.iter().any(|(name, _)| *name == stem);
            assert!(
                [vm, vm_only, host].iter().filter(|&&b| b).count() == 1,
                "tests/tests/{stem}.rs must be in exactly one of VM_TESTS, VM_ONLY_TESTS and \
                 HOST_ONLY_TESTS"
            );
        }
        Ok(())
    }

    #[test]
    fn filters_match_file_and_test_names() {
        let none: Vec<String> = Vec::new();
        assert!(matches(&none, "oom", "a"));
        let f = vec!["attribution::frees".to_owned(), "oom".to_owned()];
        assert!(matches(&f, "attribution", "frees_are_credited"));
        assert!(matches(&f, "oom", "the_memcg_named"));
        assert!(matches(&f, "events", "an_oom_kill_is_an_event"));
        assert!(!matches(&f, "attribution", "kmalloc_size_classes"));
    }

    #[test]
    fn libtest_lists_are_read_and_the_plan_names_each_test() {
        let names = test_names("a_memcg_oom_kill: test\nother: test\nbench_x: benchmark\n");
        assert_eq!(names, ["a_memcg_oom_kill", "other"]);
        let plan = plan(
            &[TestBinary { group: "oom".into(), path: "/t/deps/oom-0123".into(), tests: names }],
            90,
        );
        assert!(plan.contains("env SLABTRACE_BIN=/vm/bin/slabtrace\n"), "{plan}");
        assert!(plan.contains("timeout 90\n"), "{plan}");
        assert!(plan.contains("test oom /vm/tests/deps/oom-0123 a_memcg_oom_kill\n"), "{plan}");
        assert!(plan.contains("test oom /vm/tests/deps/oom-0123 other\n"), "{plan}");
    }
}
