//! The test VMs' initramfs: vm-init as `/init`, the static slabtrace, workload and test
//! executables, the plan, and the few host tools the tests run (`mount`, `umount`, `setpriv`),
//! copied with the shared libraries `ldd` names so that no distribution userland is needed.
//!
//! Layout, chosen so that the tests' own path logic holds unchanged:
//!
//! ```text
//! /init                         vm-init
//! /vm/plan                      what vm-init runs
//! /vm/bin/slabtrace             $SLABTRACE_BIN
//! /vm/tests/slab-workload       beside deps/, where tests/src/lib.rs's workload() looks
//! /vm/tests/deps/<test>-<hash>  the integration test executables
//! /dev/console                  the kernel opens it for init's stdio before /dev is mounted
//! <workspace>/schema/…          where the tests' CARGO_MANIFEST_DIR/../schema points
//! <workspace>/tests/schema/…    where the tests' CARGO_MANIFEST_DIR/schema points
//! <target>/tmp -> /vm/scratch/cargo-target-tmp   CARGO_TARGET_TMPDIR, onto the scratch disk
//! /vm/scratch                   where vm-init mounts the scratch disk; `$TMPDIR` is its tmp/
//! ```

use std::{
    ffi::OsString,
    fs,
    io::BufWriter,
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use super::cpio;

/// Guest paths the plan and the tests use.
pub const INIT: &str = "/init";
pub const PLAN: &str = "/vm/plan";
pub const SLABTRACE: &str = "/vm/bin/slabtrace";
pub const TESTS_DIR: &str = "/vm/tests";
/// The guest's `$TMPDIR`, on the scratch disk (vm-init makes it).
pub const TMPDIR: &str = "/vm/scratch/tmp";
/// Where `CARGO_TARGET_TMPDIR` leads in the guest: on the scratch disk, created by vm-init.
pub const TARGET_TMPDIR: &str = "/vm/scratch/cargo-target-tmp";

/// An initramfs being written.
pub struct Initramfs {
    cpio: cpio::Writer<BufWriter<fs::File>>,
    path: PathBuf,
}

impl Initramfs {
    /// Starts `path` with the directories and device node every boot needs.
    pub fn create(path: &Path) -> Result<Self> {
        let file =
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut me = Self { cpio: cpio::Writer::new(BufWriter::new(file)), path: path.to_owned() };
        for dir in ["proc", "sys", "dev", "run", "tmp", "root"] {
            me.cpio.dir(dir, 0o755)?;
        }
        me.cpio.char_device("dev/console", 0o600, 5, 1)?;
        Ok(me)
    }

    /// `source` at `guest` (an absolute guest path).
    pub fn file(&mut self, guest: &str, source: &Path) -> Result<()> {
        self.cpio.file_from(guest, source)
    }

    /// A file with `text` at `guest`.
    pub fn text(&mut self, guest: &str, text: &str) -> Result<()> {
        self.cpio.file(guest, 0o644, text.as_bytes())
    }

    /// A symbolic link at `guest` to `target`.
    pub fn symlink(&mut self, guest: &str, target: &str) -> Result<()> {
        self.cpio.symlink(guest, target)
    }

    /// An empty directory at `guest` (no error if it is there).
    pub fn dir(&mut self, guest: &str) -> Result<()> {
        if self.cpio.contains(guest) { Ok(()) } else { self.cpio.dir(guest, 0o755) }
    }

    /// The host program `name` (found on PATH, or in the sbin directories) with the shared
    /// libraries it loads, each at the path it has on the host.
    pub fn host_program(&mut self, name: &str) -> Result<()> {
        let program = crate::setup::which(name)
            .with_context(|| format!("{name} is not installed on this host"))?;
        self.host_file(&program)?;
        let out = Command::new("ldd").arg(&program).output().context("cannot run ldd")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // A static program: `ldd` says so and fails; nothing more to copy.
        if !out.status.success() && text.contains("not a dynamic executable") {
            return Ok(());
        }
        for library in ldd_libraries(&text)? {
            self.host_file(&library)?;
        }
        Ok(())
    }

    /// The host directory `dir` with everything under it, at the same paths in the guest.
    pub fn host_tree(&mut self, dir: &Path) -> Result<()> {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        // The same archive from the same tree, whatever order the directory lists in.
        entries.sort();
        if entries.is_empty() {
            self.host_file(dir)?;
        }
        for path in entries {
            if fs::symlink_metadata(&path)?.is_dir() {
                self.host_tree(&path)?;
            } else {
                self.host_file(&path)?;
            }
        }
        Ok(())
    }

    /// A host file at the same path in the guest, with each symbolic link on the way (usrmerge's
    /// `/lib -> usr/lib`, a library's soname link) recreated, so every path to it resolves.
    fn host_file(&mut self, path: &Path) -> Result<()> {
        let mut at = PathBuf::from("/");
        // What is left to walk, last component first, owned: a link's target is pushed on it.
        let mut rest: Vec<OsString> = Vec::new();
        push_components(&mut rest, path)?;
        let mut hops = 0;
        while let Some(name) = rest.pop() {
            match name.to_str() {
                Some("/") => at = PathBuf::from("/"),
                Some("..") => {
                    at.pop();
                }
                _ => {
                    at.push(&name);
                    let meta = fs::symlink_metadata(&at)
                        .with_context(|| format!("reading {}", at.display()))?;
                    let guest = at.to_string_lossy().into_owned();
                    if meta.file_type().is_symlink() {
                        let target = fs::read_link(&at)?;
                        if !self.cpio.contains(&guest) {
                            self.cpio.symlink(&guest, &target.to_string_lossy())?;
                        }
                        // Go on from where the link leads.
                        at.pop();
                        push_components(&mut rest, &target)?;
                        hops += 1;
                        ensure!(hops < 40, "too many symbolic links under {}", path.display());
                    } else if self.cpio.contains(&guest) {
                    } else if rest.is_empty() && !meta.is_dir() {
                        self.cpio.file_from(&guest, &at)?;
                    } else {
                        self.cpio.dir(&guest, 0o755)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the trailer; returns the archive's path.
    pub fn finish(self) -> Result<PathBuf> {
        self.cpio.finish()?;
        Ok(self.path)
    }
}

/// Pushes `path`'s components onto the walk stack `rest` (so that the first is popped first),
/// the root as `/`.
fn push_components(rest: &mut Vec<OsString>, path: &Path) -> Result<()> {
    let mut names = Vec::new();
    for component in path.components() {
        names.push(match component {
            Component::RootDir => OsString::from("/"),
            Component::CurDir => continue,
            Component::ParentDir => OsString::from(".."),
            Component::Normal(name) => name.to_owned(),
            Component::Prefix(_) => bail!("{} is not a Unix path", path.display()),
        });
    }
    rest.extend(names.into_iter().rev());
    Ok(())
}

/// The libraries in `ldd`'s output: `name => /path (addr)` and the loader's `/path (addr)`;
/// the vDSO has no file.
fn ldd_libraries(text: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let path = rest.split_whitespace().next().unwrap_or_default();
                ensure!(path != "not", "{} is not found on this host (ldd: {line})", name.trim());
                path
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_names_the_libraries_and_the_loader() -> Result<()> {
        let text = "\tlinux-vdso.so.1 (0x00007ffc8a5f2000)\n\
                    \tlibmount.so.1 => /lib/x86_64-linux-gnu/libmount.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            ldd_libraries(text)?,
            [
                "/lib/x86_64-linux-gnu/libmount.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let missing = ldd_libraries("\tlibfoo.so.1 => not found\n").unwrap_err().to_string();
        assert!(missing.contains("libfoo.so.1"), "{missing}");
        Ok(())
    }

    #[test]
    fn a_host_file_brings_the_links_on_its_way() -> Result<()> {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("xtask-initramfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("usr/lib"))?;
        fs::write(dir.join("usr/lib/libx.so.1.2"), b"ELF")?;
        symlink("usr/lib", dir.join("lib"))?;
        symlink("libx.so.1.2", dir.join("usr/lib/libx.so.1"))?;
        let archive = dir.join("initrd.cpio");
        let mut initramfs = Initramfs::create(&archive)?;
        initramfs.host_file(&dir.join("lib/libx.so.1"))?;
        // Twice, through another path: nothing is written twice.
        initramfs.host_file(&dir.join("usr/lib/libx.so.1.2"))?;
        initramfs.finish()?;
        let bytes = fs::read(&archive)?;
        fs::remove_dir_all(&dir)?;
        let text = String::from_utf8_lossy(&bytes);
        let d = dir.to_string_lossy().trim_start_matches('/').to_owned();
        for name in [
            format!("{d}/lib\0"),
            format!("{d}/usr/lib/libx.so.1\0"),
            format!("{d}/usr/lib/libx.so.1.2\0"),
        ] {
            assert_eq!(text.matches(&name).count(), 1, "{name:?} once in the archive");
        }
        Ok(())
    }
}
