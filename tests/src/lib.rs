//! What the root integration tests share: real cgroups and tmpfs mounts that clean up after
//! themselves (even when a test panics), a running slabtrace, and the kernel's own counts.
//!
//! Every test creates its own cgroup2 directories, runs a workload with a known slab footprint
//! in them, and asserts on what the real `slabtrace` binary reports.

pub mod bpf_maps;
pub mod containerd;
pub mod daemon;
pub mod helm;
pub mod memcg;
pub mod prometheus;
pub mod python;
pub mod vrl;

use std::{
    fs,
    io::Read as _,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

/// The longest a test waits for a state it expects: RCU callbacks run (lazy RCU alone may hold
/// frees ~10 s, and a busy or emulated machine takes longer), a daemon's interval passed. Only
/// a hang reaches it; tests wait for the state itself, so a slow machine makes them slower, not
/// red.
pub const PATIENCE: Duration = Duration::from_mins(5);

/// Looks with `look` until `reached` accepts what it saw, and returns that. After
/// [`PATIENCE`] it returns the last look anyway: the caller's assertions then fail with
/// everything it saw, rather than a bare "timed out".
pub fn wait_for_state<T>(
    what: &str,
    mut look: impl FnMut() -> Result<T>,
    reached: impl Fn(&T) -> bool,
) -> Result<T> {
    let started = Instant::now();
    loop {
        let seen = look()?;
        if reached(&seen) {
            return Ok(seen);
        }
        if started.elapsed() >= PATIENCE {
            eprintln!("waited {PATIENCE:?} for {what}: checking what there is");
            return Ok(seen);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Whether slabtrace's free events name their cache on this kernel: from Linux 6.1 (before,
/// named-cache allocations are traced with fexit and an untracked free is counted under the
/// unknown cache, with every other untracked `kfree`).
pub fn frees_name_their_cache() -> Result<bool> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let mut numbers = release.trim().split(['.', '-']).map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    Ok((major, minor) >= (6, 1))
}

/// Sampled objects of `c` gone: freed, or pushed out of the live-object table.
#[must_use]
pub const fn gone(c: &slabtrace_common::Counters) -> u64 {
    c.sampled_frees + c.sampled_evicted
}

/// The workload binary of this package: cargo puts it beside the `deps/` directory that holds
/// the test executables.
pub fn workload() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    dir.join("slab-workload")
}

/// The slabtrace binary under test: `$SLABTRACE_BIN`, else the workspace's debug build
/// (`cargo xtask test` builds it first).
pub fn slabtrace_bin() -> PathBuf {
    std::env::var_os("SLABTRACE_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/slabtrace"),
        PathBuf::from,
    )
}

/// Fails loudly unless the tests can run: root, BTF, a cgroup2 mount.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "integration tests need root: run `sudo cargo xtask test`"
    );
    ensure!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "integration tests need the kernel's BTF at /sys/kernel/btf/vmlinux"
    );
    ensure!(
        slabtrace_bin().exists(),
        "{} is missing: run `cargo build -p slabtrace`",
        slabtrace_bin().display()
    );
    Ok(())
}

/// slabtrace's tracer, started in this process through the library as the daemon starts it
/// (1 in 16 addresses tracked), for tests of the kernel side that need no binary.
pub fn library_tracer() -> Result<slabtrace::probe::Tracer> {
    use slabtrace::{
        kernel::{btf::Btf, layout::KernelLayout},
        probe::{Limits, Parts, ProbeSet, TracepointPrograms, Tracer},
    };
    let vmlinux = Path::new("/sys/kernel/btf/vmlinux");
    let layout = KernelLayout::from_btf(&Btf::from_file(vmlinux)?)?;
    let limits = Limits { max_keys: 16_384, max_live: 65_536 };
    let config = layout.config(16);
    let programs = TracepointPrograms::Auto;
    let set = ProbeSet::Slabtrace;
    Ok(Tracer::start(&layout, config, limits, vmlinux, set, Parts::ALL, programs, None)?)
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_root() -> Result<PathBuf> {
    // slabtrace's own finder: the tests must agree with it on where cgroup2 is.
    Ok(slabtrace::cgroup::mount::find_cgroup2_mount(Path::new("/proc"))?)
}

/// A cgroup2 directory that is removed when dropped, after its processes are killed, with
/// the parent directories it had to create.
pub struct Cgroup {
    path: PathBuf,
    relative: String,
    /// Parents created for it, deepest first, removed after it.
    created_parents: Vec<PathBuf>,
}

impl Cgroup {
    /// Creates `<cgroup2 root>/slabtrace-test-<pid>-<tag>`.
    pub fn create(tag: &str) -> Result<Self> {
        let name = format!("slabtrace-test-{}-{tag}", std::process::id());
        let path = cgroup2_root()?.join(&name);
        if path.exists() {
            let _ = fs::remove_dir(&path);
        }
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { path, relative: format!("/{name}"), created_parents: Vec::new() })
    }

    /// Creates the cgroup at `relative` (e.g. a kubelet-shaped
    /// `/kubepods/besteffort/pod<uid>/<id>`), with whatever parents are missing; those are
    /// removed again on drop.
    pub fn create_at(relative: &str) -> Result<Self> {
        let root = cgroup2_root()?;
        let path = root.join(relative.trim_start_matches('/'));
        let mut created_parents = Vec::new();
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .take_while(|p| *p != root && !p.exists())
            .map(PathBuf::from)
            .collect();
        missing.reverse();
        for dir in &missing {
            fs::create_dir(dir).with_context(|| format!("mkdir {}", dir.display()))?;
            created_parents.insert(0, dir.clone());
        }
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { path, relative: relative.to_owned(), created_parents })
    }

    /// The cgroup's id: the inode number of its directory.
    pub fn id(&self) -> Result<u64> {
        Ok(fs::metadata(&self.path)?.ino())
    }

    /// Its directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its path relative to the cgroup2 root, as slabtrace reports it.
    #[must_use]
    pub fn relative(&self) -> &str {
        &self.relative
    }

    /// Runs `cmd` inside this cgroup and waits for it; fails if it fails.
    pub fn run(&self, cmd: &mut Command) -> Result<Output> {
        run_in(&[self.path.as_path()], cmd)
    }
}

/// Runs `cmd` in each cgroup directory of `dirs` (a cgroup2 one and, on a hybrid node, a v1
/// memcg), from its first instruction, and waits for it; fails if it fails.
pub fn run_in(dirs: &[&Path], cmd: &mut Command) -> Result<Output> {
    let files = dirs
        .iter()
        .map(|dir| {
            fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .with_context(|| format!("opening {}/cgroup.procs", dir.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let fds: Vec<i32> = files.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    // SAFETY: between fork and exec only async-signal-safe calls: write(2) on fds opened
    // before the fork. Writing "0" moves the writing process itself.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    drop(files);
    ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(out)
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(procs) = fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for dir in std::iter::once(&self.path).chain(&self.created_parents) {
            remove_cgroup_dir(dir);
        }
    }
}

/// Removes an emptied cgroup directory, retrying for up to 5 s while the kernel lets go of
/// its last processes; says so on stderr if it cannot.
pub fn remove_cgroup_dir(dir: &Path) {
    let removed = (0..50).any(|_| {
        let gone = fs::remove_dir(dir).is_ok() || !dir.exists();
        if !gone {
            thread::sleep(Duration::from_millis(100));
        }
        gone
    });
    if !removed {
        eprintln!("warning: could not remove cgroup {}", dir.display());
    }
}

/// A tmpfs mounted on a fresh directory, unmounted and removed when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs at /tmp/slabtrace-test-<pid>-<tag>.
    pub fn mount(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("slabtrace-test-{}-{tag}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512m", "slabtrace-test"])
            .arg(&dir)
            .status()?;
        ensure!(status.success(), "mount tmpfs on {} failed", dir.display());
        Ok(Self { dir })
    }

    /// The mount point.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A running `slabtrace report`.
pub struct Slabtrace {
    child: Child,
    ready: PathBuf,
    /// Its standard error so far, drained by a thread of its own so that a test can watch its
    /// log while it runs.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    drain: Option<thread::JoinHandle<()>>,
}

impl Slabtrace {
    /// Starts `slabtrace report --format json` with `extra` arguments and waits until its probes
    /// are attached.
    pub fn start(extra: &[&str]) -> Result<Self> {
        Self::start_logging(
            extra,
            &std::env::var("SLABTRACE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
    }

    /// [`Self::start`] with `RUST_LOG=log`, for a test that watches the log
    /// ([`Self::wait_for_log`]).
    pub fn start_logging(extra: &[&str], log: &str) -> Result<Self> {
        // One file per tracer: tests of one binary run at once, and a tracer taken for ready
        // on another's file is interrupted before it can handle SIGINT.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ready =
            std::env::temp_dir().join(format!("slabtrace-test-{}-{n}-ready", std::process::id()));
        let _ = fs::remove_file(&ready);
        // Far beyond a test's waits, each up to PATIENCE: one that times out must end in the
        // test's assertions, with the figures, and not in a tracer gone by its own clock.
        let child = Command::new(slabtrace_bin())
            .args(["report", "--format", "json", "--duration", "3600", "--ready-file"])
            .arg(&ready)
            .args(extra)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting slabtrace")?;
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut me = Self { child, ready, stderr: stderr.clone(), drain: None };
        if let Some(mut pipe) = me.child.stderr.take() {
            me.drain = Some(thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    if let Ok(mut all) = stderr.lock() {
                        all.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_mins(1);
        while !me.ready.exists() {
            if let Some(status) = me.child.try_wait()? {
                bail!("slabtrace exited before attaching ({status}): {}", me.stderr_now());
            }
            ensure!(Instant::now() < deadline, "slabtrace did not attach within 60 s");
            thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has written to standard error so far.
    #[must_use]
    pub fn stderr_now(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until its log has a line containing `needle` (started with
    /// [`Self::start_logging`] at a level that writes it); fails, with the log, if it never does.
    pub fn wait_for_log(&self, what: &str, needle: &str) -> Result<()> {
        let found = wait_for_state(what, || Ok(self.stderr_now().contains(needle)), |&f| f)?;
        ensure!(
            found,
            "slabtrace never logged {needle:?} ({what}); its log:\n{}",
            self.stderr_now()
        );
        Ok(())
    }

    /// What it has counted so far for `cgroup_id` in the caches called `cache`, read from its
    /// maps (the one-shot report has no other window on its progress).
    pub fn counters(&self, cgroup_id: u64, cache: &str) -> Result<slabtrace_common::Counters> {
        bpf_maps::counters_of(self.child.id(), cgroup_id, cache, false)
    }

    /// Waits until every sampled `cache` object `cgroup_id` allocated is gone (freed, or pushed
    /// out of the live-object table), and returns its counters then. Frees of inodes, dentries
    /// and files come in RCU callbacks, late.
    ///
    /// The live-object table is written without locks: two CPUs filling one slot at once keep
    /// one object, and the other's free comes back untracked. So once 99% are gone, the wait
    /// also ends when the untracked frees of the cache make up the rest: every free has come,
    /// whoever it was credited to. The assertions that follow say how close the credit is.
    pub fn wait_for_all_gone(
        &self,
        cgroup_id: u64,
        cache: &str,
    ) -> Result<slabtrace_common::Counters> {
        // Before Linux 6.1 an untracked free is counted under the unknown cache, with every
        // other untracked kfree on the node: the 99% gate keeps that from ending the wait early
        // by more than 1%.
        let unknown = !frees_name_their_cache()?;
        let pid = self.child.id();
        let (_, mine) = wait_for_state(
            &format!("every sampled {cache} object of cgroup {cgroup_id} to be freed"),
            || {
                let untracked = bpf_maps::counters_of(
                    pid,
                    slabtrace_common::key::UNTRACKED_CGROUP,
                    cache,
                    unknown,
                )?;
                Ok((untracked.sampled_frees, self.counters(cgroup_id, cache)?))
            },
            |(untracked, mine)| {
                let (gone, target) = (gone(mine), mine.sampled_allocs);
                gone >= target || (gone >= target * 99 / 100 && gone + untracked >= target)
            },
        )?;
        Ok(mine)
    }

    /// Ends tracing with SIGINT and returns the JSON report.
    pub fn finish(mut self) -> Result<Value> {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(i32::try_from(self.child.id())?, libc::SIGINT) };
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out)?;
        }
        let status = self.child.wait()?;
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        let err = self.stderr_now();
        ensure!(status.success(), "slabtrace failed ({status}): {err}");
        if !err.trim().is_empty() {
            eprintln!("slabtrace stderr:\n{err}");
        }
        let report: Value = serde_json::from_str(&out)
            .with_context(|| format!("slabtrace printed no JSON report: {out}"))?;
        check_report_schema(&report)?;
        Ok(report)
    }
}

/// Fails with every way `report` breaks the published report schema
/// (`schema/slabtrace.report.v1.json`): every report a test reads is checked against it.
pub fn check_report_schema(report: &Value) -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/slabtrace.report.v1.json");
    let schema: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| anyhow::anyhow!("{} is not a valid JSON Schema: {e}", path.display()))?;
    let problems: Vec<String> =
        validator.iter_errors(report).map(|e| format!("{e} at {}", e.instance_path)).collect();
    ensure!(problems.is_empty(), "the report breaks {}:\n{}", path.display(), problems.join("\n"));
    Ok(())
}

/// The strict form of the event schema users' pipelines are told to validate against
/// (`schema/slabtrace.event.v1.json` is it opened): it refuses any field it does not list, so
/// a field the daemon adds without documenting it fails.
pub fn event_schema() -> Result<jsonschema::Validator> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/slabtrace.event.v1.strict.json");
    let schema: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| anyhow::anyhow!("{} is not a valid JSON Schema: {e}", path.display()))
}

/// Fails with every way any of `events` breaks the strict event schema ([`event_schema`]).
pub fn check_event_schema(events: &[Value]) -> Result<()> {
    let validator = event_schema()?;
    let mut problems = Vec::new();
    for event in events {
        for error in validator.iter_errors(event) {
            problems.push(format!("{error} at {} in {event}", error.instance_path));
        }
    }
    ensure!(problems.is_empty(), "events that break the schema:\n{}", problems.join("\n"));
    Ok(())
}

impl Drop for Slabtrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.ready);
    }
}

/// `active_objs` of a cache in /proc/slabinfo, after asking SLUB to flush its per-CPU slabs
/// and partial lists for that cache: SLUB counts every object of a CPU's slab as active, so
/// without the flush the count drifts by whatever earlier work left there.
pub fn slabinfo_active(cache: &str) -> Result<u64> {
    let _ = fs::write(format!("/sys/kernel/slab/{cache}/shrink"), "1");
    let text = fs::read_to_string("/proc/slabinfo")?;
    for line in text.lines().skip(2) {
        let mut f = line.split_whitespace();
        if f.next() == Some(cache) {
            return Ok(f.next().context("short slabinfo line")?.parse()?);
        }
    }
    bail!("no cache {cache} in /proc/slabinfo")
}

/// Objects of a cache in use that are none of the test's: what else on the node may hold or
/// take while a test waits for the kernel to free its own (memfds, other mounts).
pub const SETTLE_SLACK: u64 = 200;

/// Waits until `seen()` says the tracer has every free the test waits for, or the kernel's own
/// count of `cache`'s objects in use ([`slabinfo_active`]) is down to `settled_at`. slabtrace's
/// programs run in the free path, before the object goes back: once the kernel has freed the
/// objects, the tracer has seen every free it ever will. A free it never saw is then a shortfall
/// for the test's assertions to measure, not a wait until [`PATIENCE`] runs out.
pub fn wait_for_kernel_frees(
    what: &str,
    cache: &str,
    settled_at: u64,
    mut seen: impl FnMut() -> Result<bool>,
) -> Result<()> {
    wait_for_state(
        what,
        || Ok((seen()?, slabinfo_active(cache)?)),
        |&(seen, active)| seen || active <= settled_at,
    )?;
    Ok(())
}

/// The report's entry for a cgroup path.
#[must_use]
pub fn cgroup<'a>(report: &'a Value, path: &str) -> Option<&'a Value> {
    report["cgroups"].as_array()?.iter().find(|c| c["cgroup"] == path)
}

/// A cgroup entry's figures for one cache (zeros if absent).
#[must_use]
pub fn cache_of<'a>(cgroup: Option<&'a Value>, cache: &str) -> Option<&'a Value> {
    cgroup?["caches"].as_array()?.iter().find(|c| c["cache"] == cache)
}

/// A count field of an entry; 0 if the entry is absent (nothing of it was counted). A field
/// missing from an entry that is there, or not a count, fails the test: a renamed field must
/// not read as a zero that an `assert_eq!(…, 0)` would take for an answer.
///
/// # Panics
/// When the field is missing or not a count.
#[must_use]
pub fn num(entry: Option<&Value>, field: &str) -> u64 {
    let Some(entry) = entry else { return 0 };
    match entry.get(field) {
        Some(value) => value.as_u64().unwrap_or_else(|| panic!("{field} is not a count: {value}")),
        None => panic!("no field {field} in {entry}: renamed or removed?"),
    }
}

/// The node-wide entry for a cache.
#[must_use]
pub fn node_cache<'a>(report: &'a Value, cache: &str) -> Option<&'a Value> {
    report["caches"].as_array()?.iter().find(|c| c["cache"] == cache)
}

/// The report's entry for the pod with `uid`, or an error that shows what was reported.
pub fn reported_pod<'a>(report: &'a Value, uid: &str) -> Result<&'a Value> {
    let pods = report["pods"].as_array().context("the report has no pods[]")?;
    pods.iter().find(|p| p["uid"] == uid).with_context(|| format!("pod {uid} not in {pods:#?}"))
}

/// A fresh pod uid, shaped like Kubernetes' (a random UUID).
pub fn fresh_uid() -> Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/uuid")?.trim().to_owned())
}

/// Mounts the BPF filesystem at /sys/fs/bpf if nothing is mounted there, as systemd does at
/// boot on most distributions (this VM boots without it).
pub fn ensure_bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    if mounts.lines().any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf")) {
        return Ok(());
    }
    let status = Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status()?;
    ensure!(status.success(), "cannot mount the BPF filesystem at /sys/fs/bpf");
    Ok(())
}

/// A pin directory of the test's own on the BPF filesystem (mounted first if need be), empty
/// at the start and removed, with its maps, on drop.
pub struct PinDir(PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/slabtrace-test-<pid>-<tag>`.
    pub fn new(tag: &str) -> Result<Self> {
        ensure_bpffs()?;
        let dir = PathBuf::from(format!("/sys/fs/bpf/slabtrace-test-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Ok(Self(dir))
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Its path, as a `--pin-path` argument.
    #[must_use]
    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
