//! Which slab cache names share one cache, read from SLUB's `/sys/kernel/slab`.
//!
//! SLUB merges caches of the same object size, alignment and flags into one, so the name a
//! tracepoint or `/proc/slabinfo` reports (the name of the cache created first) may stand for
//! several: `UDP`, `UDP-Lite` and `PINGv6` can all be one `:A-0001344`. In sysfs every real
//! cache is a directory; a mergeable cache's directory gets a synthetic name (`:A-0000192`,
//! `:0000064`: `A` for accounted, then the object size) and *every* name of it, even a lone one,
//! is a symlink to that directory. An unmergeable cache is a directory under its own name.
//! `CONFIG_SLAB_MERGE_DEFAULT` and the `slab_nomerge`/`slab_merge` boot options decide how much merging
//! happens; with `CONFIG_SLUB_SYSFS` off there is no directory and no alias information.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// Why `/sys/kernel/slab` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("cannot list {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    Entry {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads `slab_sysfs` (normally `/sys/kernel/slab`) and returns, for every cache name, the
/// sorted other names merged with it (an empty list if it is not merged).
///
/// A missing directory means the kernel was built without `CONFIG_SLUB_SYSFS`; that is not an
/// error, there is just nothing to report. A cache destroyed while the directory is being read
/// (a module unloading) is skipped.
pub fn read_aliases(slab_sysfs: &Path) -> Result<BTreeMap<String, Vec<String>>, AliasError> {
    let dir = match std::fs::read_dir(slab_sysfs) {
        Ok(dir) => dir,
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            log::debug!(
                "{} does not exist (CONFIG_SLUB_SYSFS off?); no slab alias information",
                slab_sysfs.display()
            );
            return Ok(BTreeMap::new());
        }
        Err(source) => {
            return Err(AliasError::ReadDir { path: slab_sysfs.to_owned(), source });
        }
    };

    let mut entries = Vec::new();
    for entry in dir {
        let entry =
            entry.map_err(|source| AliasError::ReadDir { path: slab_sysfs.to_owned(), source })?;
        let path = entry.path();
        if let Some(pair) =
            entry_target(&entry).map_err(|source| AliasError::Entry { path, source })?
        {
            entries.push(pair);
        }
    }
    Ok(group_aliases(entries))
}

/// One directory entry as (name, name of the cache directory it is or points to); `None` for
/// entries that are neither a directory nor a symlink, are not UTF-8, or vanished meanwhile.
fn entry_target(entry: &std::fs::DirEntry) -> io::Result<Option<(String, String)>> {
    let Ok(name) = entry.file_name().into_string() else {
        // Kernel cache names are ASCII; a non-UTF-8 one could not be matched against anything
        // slabtrace reports anyway.
        log::debug!("skipping non-UTF-8 slab sysfs entry {}", entry.path().display());
        return Ok(None);
    };
    let file_type = match entry.file_type() {
        Ok(file_type) => file_type,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    if file_type.is_dir() {
        return Ok(Some((name.clone(), name)));
    }
    if !file_type.is_symlink() {
        return Ok(None);
    }
    let target = match std::fs::read_link(entry.path()) {
        Ok(target) => target,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    // The kernel writes a bare sibling name (":A-0001280"), but only the last component names
    // the cache, so a relative or absolute target works too.
    let target = target.file_name().and_then(|t| t.to_str()).map(str::to_owned);
    Ok(target.map(|target| (name, target)))
}

/// Groups (name, canonical cache directory name) pairs: every name maps to the sorted other
/// names with the same directory. Names starting with `:` are SLUB's synthetic directory names,
/// not names anyone allocates from, and are left out (also from the lists).
#[must_use]
pub fn group_aliases(
    entries: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, Vec<String>> {
    let mut by_target: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, target) in entries {
        if name.starts_with(':') {
            continue;
        }
        by_target.entry(target).or_default().insert(name);
    }

    let mut aliases = BTreeMap::new();
    for names in by_target.values() {
        for name in names {
            let others = names.iter().filter(|other| *other != name).cloned().collect();
            aliases.insert(name.clone(), others);
        }
    }
    aliases
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::TempDir;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn groups_merged_names_and_keeps_lone_ones() {
        let aliases = group_aliases(pairs(&[
            (":A-0001344", ":A-0001344"),
            ("UDP", ":A-0001344"),
            ("PINGv6", ":A-0001344"),
            ("UDP-Lite", ":A-0001344"),
            // A mergeable cache that happens to have no partner is still a symlink.
            (":0001232", ":0001232"),
            ("bfq_io_cq", ":0001232"),
            // An unmergeable cache is a directory under its own name.
            ("TCP", "TCP"),
        ]));
        assert_eq!(aliases.len(), 5);
        assert_eq!(aliases["UDP"], names(&["PINGv6", "UDP-Lite"]));
        assert_eq!(aliases["PINGv6"], names(&["UDP", "UDP-Lite"]));
        assert_eq!(aliases["UDP-Lite"], names(&["PINGv6", "UDP"]));
        assert_eq!(aliases["bfq_io_cq"], Vec::<String>::new());
        assert_eq!(aliases["TCP"], Vec::<String>::new());
        assert!(!aliases.keys().any(|name| name.starts_with(':')));
    }

    #[test]
    fn duplicates_and_empty_input() {
        assert!(group_aliases(Vec::new()).is_empty());
        let aliases = group_aliases(pairs(&[("a", ":1"), ("a", ":1"), ("b", ":1")]));
        assert_eq!(aliases["a"], names(&["b"]));
        assert_eq!(aliases["b"], names(&["a"]));
    }

    #[test]
    fn reads_fixture_tree() {
        use std::os::unix::fs::symlink;
        let tree = TempDir::new("slab-sysfs");
        let root = tree.path();
        for dir in [":A-0000064", ":0000192", "TCP", "kmalloc-64"] {
            std::fs::create_dir(root.join(dir)).expect("mkdir");
        }
        // Written like the kernel does (bare sibling name), plus one absolute target.
        symlink(":A-0000064", root.join("anon_vma_chain")).expect("symlink");
        symlink(":A-0000064", root.join("vmap_area")).expect("symlink");
        symlink(root.join(":0000192"), root.join("aio_kiocb")).expect("symlink");
        // A stray regular file is not a cache.
        std::fs::write(root.join("README"), "").expect("write");

        let aliases = read_aliases(root).expect("reads");
        assert_eq!(
            aliases,
            BTreeMap::from([
                ("TCP".to_owned(), vec![]),
                ("aio_kiocb".to_owned(), vec![]),
                ("anon_vma_chain".to_owned(), names(&["vmap_area"])),
                ("kmalloc-64".to_owned(), vec![]),
                ("vmap_area".to_owned(), names(&["anon_vma_chain"])),
            ])
        );
    }

    #[test]
    fn missing_directory_is_empty_not_an_error() {
        let tree = TempDir::new("slab-sysfs-missing");
        let aliases = read_aliases(&tree.path().join("slab")).expect("missing dir is fine");
        assert!(aliases.is_empty());
    }

    #[test]
    fn a_file_instead_of_a_directory_is_an_error() {
        let tree = TempDir::new("slab-sysfs-file");
        let file = tree.path().join("slab");
        std::fs::write(&file, "").expect("write");
        let err = read_aliases(&file).unwrap_err();
        assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
    }

    #[test]
    #[ignore = "reads the live kernel as root: `cargo xtask test` runs it"]
    fn reads_real_sys_kernel_slab() {
        let root = Path::new("/sys/kernel/slab");
        assert!(root.is_dir(), "{} absent (CONFIG_SLUB_SYSFS off?)", root.display());
        let aliases = read_aliases(root).expect("reads /sys/kernel/slab");
        assert!(!aliases.is_empty());
        // Aliasing is symmetric: if a lists b, b lists a.
        for (name, others) in &aliases {
            for other in others {
                assert!(aliases[other].contains(name), "{name} ↔ {other}");
            }
        }
        // Cross-check one merged group against the symlinks themselves.
        let merged = aliases.iter().find(|(_, others)| !others.is_empty());
        let (name, others) = merged.expect("no merged caches (booted with slab_nomerge?)");
        let target = std::fs::read_link(root.join(name)).expect("merged name is a symlink");
        for other in others {
            assert_eq!(std::fs::read_link(root.join(other)).expect("symlink"), target);
        }
    }
}
