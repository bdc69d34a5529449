//! A cgroup v1 memory cgroup with a limit, for the OOM tests: hybrid nodes (this one included)
//! have the memory controller only in v1, so a limit is set there while slab is still
//! attributed through the cgroup2 tree. Removed when dropped, after its processes are killed,
//! even when a test panics.

use std::{
    ffi::CStr,
    fs,
    os::{
        fd::AsRawFd as _,
        unix::{fs::MetadataExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};

/// Where a child sets its own OOM score.
const OOM_SCORE_ADJ: &CStr = c"/proc/self/oom_score_adj";

use crate::{Cgroup, cgroup2_root};

/// `<memory v1 mount>/slabtrace-test-<pid>-<tag>`, removed on drop.
pub struct Memcg {
    /// The memory hierarchy's mount point.
    root: PathBuf,
    path: PathBuf,
    relative: String,
}

impl Memcg {
    /// Creates the memcg with `memory.limit_in_bytes` = `limit`. Fails, saying why, where the
    /// memory controller is not in a cgroup v1 hierarchy.
    pub fn create(tag: &str, limit: u64) -> Result<Self> {
        // slabtrace's own finder: the test must agree with it on where memcgs are named.
        let root = slabtrace::node::oom::find_memcg_root(Path::new("/proc"))
            .context("no cgroup hierarchy has the memory controller")?;
        if root == cgroup2_root()? {
            bail!(
                "the memory controller is in cgroup2 here ({}), but this test sets a cgroup v1 \
                 memory.limit_in_bytes: run it on a hybrid node",
                root.display()
            );
        }
        let name = format!("slabtrace-test-{}-{tag}", std::process::id());
        let me = Self::mkdir(&root, &format!("/{name}"))?;
        fs::write(me.path.join("memory.limit_in_bytes"), limit.to_string())
            .with_context(|| format!("setting the limit of {}", me.path.display()))?;
        Ok(me)
    }

    /// Creates a memcg `name` inside this one, with no limit of its own. Drop it first.
    pub fn child(&self, name: &str) -> Result<Self> {
        Self::mkdir(&self.root, &format!("{}/{name}", self.relative))
    }

    fn mkdir(root: &Path, relative: &str) -> Result<Self> {
        let path = root.join(relative.trim_start_matches('/'));
        if path.exists() {
            let _ = fs::remove_dir(&path);
        }
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { root: root.to_owned(), path, relative: relative.to_owned() })
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

    /// The kernel's own count of OOM kills in this memcg (`oom_kill` in `memory.oom_control`).
    pub fn oom_kills(&self) -> Result<u64> {
        let text = fs::read_to_string(self.path.join("memory.oom_control"))?;
        text.lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .context("memory.oom_control has no oom_kill line")?
            .trim()
            .parse()
            .context("oom_kill is not a number")
    }

    /// Starts `cmd` in this memcg and in the cgroup2 `cgroup` from its first instruction, with
    /// `oom_score_adj` 1000: should anything but this memcg run out of memory, it is still
    /// the first to go.
    pub fn spawn(&self, cgroup: &Cgroup, cmd: &mut Command) -> Result<Child> {
        let open = |path: PathBuf| {
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))
        };
        let v1 = open(self.path.join("cgroup.procs"))?;
        let cg2 = cgroup2_root()?.join(cgroup.relative().trim_start_matches('/'));
        let v2 = open(cg2.join("cgroup.procs"))?;
        let fds = [v1.as_raw_fd(), v2.as_raw_fd()];
        // SAFETY: between fork and exec only async-signal-safe calls: write(2) on fds opened
        // before the fork ("0" moves the writing process itself), open(2) and close(2).
        unsafe {
            cmd.pre_exec(move || {
                for fd in fds {
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
