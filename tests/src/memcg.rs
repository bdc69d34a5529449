//! A memory cgroup with a limit, for the OOM tests, in whichever hierarchy has the memory
//! controller. Hybrid nodes (this one included) have it only in cgroup v1: the limit is set
//! there while slab is still attributed through the cgroup2 tree, so a process joins both.
//! cgroup-v2-only nodes (Kubernetes 1.25+, `cargo xtask vm`'s VMs) have it in cgroup2: the
//! memcg is a cgroup2 directory, and a process, which is in exactly one cgroup2 directory, is
//! under the limit only inside it; [`Memcg::cgroup`] makes the process's cgroup the right way
//! for both. Removed when dropped, after its processes are killed, even when a test panics.

use std::{
    ffi::CStr,
    fs,
    os::{
        fd::AsRawFd,
        unix::{fs::MetadataExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};

/// Where a child sets its own OOM score.
const OOM_SCORE_ADJ: &CStr = c"/proc/self/oom_score_adj";

use crate::{Cgroup, cgroup2_root};

/// `<memory mount>/slabtrace-test-<pid>-<tag>` (cgroup v1) or
/// `<cgroup2 mount>/slabtrace-test-<pid>-<tag>-memcg` (cgroup2), removed on drop.
pub struct Memcg {
    /// The memory hierarchy's mount point.
    root: PathBuf,
    path: PathBuf,
    relative: String,
    /// Whether the memory controller is cgroup2's (the hierarchy the tests' cgroups are in).
    v2: bool,
}

impl Memcg {
    /// Creates the memcg with a limit of `limit` bytes (`memory.limit_in_bytes` in v1,
    /// `memory.max` in cgroup2). Fails, saying why, where no hierarchy has the memory
    /// controller.
    pub fn create(tag: &str, limit: u64) -> Result<Self> {
        // slabtrace's own finder: the test must agree with it on where memcgs are named.
        let root = slabtrace::node::oom::find_memcg_root(Path::new("/proc"))
            .context("no cgroup hierarchy has the memory controller")?;
        let v2 = root == cgroup2_root()?;
        let pid = std::process::id();
        let me = if v2 {
            let enabled = fs::read_to_string(root.join("cgroup.subtree_control"))?;
            ensure!(
                enabled.split_whitespace().any(|c| c == "memory"),
                "the memory controller is not enabled for cgroup2's children: write +memory to \
                 {}/cgroup.subtree_control",
                root.display()
            );
            // Another name than `Cgroup::create`'s of the same tag, which is in the same tree.
            let me = Self::mkdir(&root, &format!("/slabtrace-test-{pid}-{tag}-memcg"), true)?;
            fs::write(me.path.join("memory.max"), limit.to_string())
                .with_context(|| format!("setting the limit of {}", me.path.display()))?;
            me
        } else {
            let me = Self::mkdir(&root, &format!("/slabtrace-test-{pid}-{tag}"), false)?;
            fs::write(me.path.join("memory.limit_in_bytes"), limit.to_string())
                .with_context(|| format!("setting the limit of {}", me.path.display()))?;
            me
        };
        Ok(me)
    }

    /// Creates a memcg `name` inside this one, with no limit of its own. Drop it first.
    pub fn child(&self, name: &str) -> Result<Self> {
        if self.v2 {
            // So that the child is a memcg of its own, not part of this one's.
            fs::write(self.path.join("cgroup.subtree_control"), "+memory")
                .with_context(|| format!("enabling memory under {}", self.path.display()))?;
        }
        Self::mkdir(&self.root, &format!("{}/{name}", self.relative), self.v2)
    }

    /// The cgroup2 directory for a process of this memcg, named as `Cgroup::create(tag)`
    /// names it: in cgroup v1 that one, at the top of the cgroup2 tree (the memcg is in
    /// another hierarchy); in cgroup2 one inside this memcg, the only place its limit holds.
    pub fn cgroup(&self, tag: &str) -> Result<Cgroup> {
        if self.v2 {
            let name = format!("slabtrace-test-{}-{tag}", std::process::id());
            Cgroup::create_at(&format!("{}/{name}", self.relative))
        } else {
            Cgroup::create(tag)
        }
    }

    fn mkdir(root: &Path, relative: &str, v2: bool) -> Result<Self> {
        let path = root.join(relative.trim_start_matches('/'));
        if path.exists() {
            let _ = fs::remove_dir(&path);
        }
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { root: root.to_owned(), path, relative: relative.to_owned(), v2 })
    }

    /// The memcg's id: the inode number of its directory.
    pub fn id(&self) -> Result<u64> {
        Ok(fs::metadata(&self.path)?.ino())
    }

    /// Its path relative to the memory hierarchy's root, as slabtrace names memcgs.
    #[must_use]
    pub fn relative(&self) -> &str {
        &self.relative
    }

    /// The kernel's own count of OOM kills in this memcg: `oom_kill` in `memory.oom_control`
    /// (v1) or in `memory.events` (cgroup2, with its descendants').
    pub fn oom_kills(&self) -> Result<u64> {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        let text = fs::read_to_string(self.path.join(file))?;
        text.lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .with_context(|| format!("{file} has no oom_kill line"))?
            .trim()
            .parse()
            .context("oom_kill is not a number")
    }

    /// Starts `cmd` in this memcg and in the cgroup2 `cgroup` from its first instruction, with
    /// `oom_score_adj` 1000: should anything but this memcg run out of memory, it is still
    /// the first to go. In cgroup2 the two are one: `cgroup` must be inside this memcg (make it
    /// with [`Memcg::cgroup`]).
    pub fn spawn(&self, cgroup: &Cgroup, cmd: &mut Command) -> Result<Child> {
        let open = |path: PathBuf| {
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))
        };
        let cg2 = cgroup2_root()?.join(cgroup.relative().trim_start_matches('/'));
        if self.v2 {
            ensure!(
                cg2.starts_with(&self.path),
                "on a cgroup-v2-only node a process is in one cgroup, so {} is not under the \
                 limit of {}: create it with Memcg::cgroup",
                cgroup.relative(),
                self.relative
            );
        }
        let v2 = open(cg2.join("cgroup.procs"))?;
        let v1 = if self.v2 { None } else { Some(open(self.path.join("cgroup.procs"))?) };
        let fds: Vec<i32> = v1.iter().chain([&v2]).map(AsRawFd::as_raw_fd).collect();
        // SAFETY: between fork and exec only async-signal-safe calls: write(2) on fds opened
        // before the fork ("0" moves the writing process itself), open(2) and close(2).
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let adj = libc::open(OOM_SCORE_ADJ.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if adj < 0 || libc::write(adj, b"1000".as_ptr().cast(), 4) != 4 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(adj);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        drop((v1, v2));
        Ok(child)
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        let procs = self.path.join("cgroup.procs");
        let removed = (0..50).any(|_| {
            if let Ok(text) = fs::read_to_string(&procs) {
                for pid in text.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let gone = fs::remove_dir(&self.path).is_ok() || !self.path.exists();
            if !gone {
                thread::sleep(Duration::from_millis(100));
            }
            gone
        });
        if !removed {
            eprintln!("warning: could not remove memcg {}", self.path.display());
        }
    }
}

/// Fails loudly unless `child` was killed by SIGKILL.
pub fn ensure_killed(child: &mut Child) -> Result<()> {
    use std::os::unix::process::ExitStatusExt as _;
    let status = child.wait()?;
    ensure!(status.signal() == Some(libc::SIGKILL), "expected an OOM kill, but {status}");
    Ok(())
}
