//! `/proc/slabinfo` (format version 2.1): the kernel's own count of objects and slabs per cache.
//!
//! This is the ground truth slabtrace's per-cgroup attribution is checked against: what the
//! probes saw allocated should add up to what the kernel says its caches hold. The file is
//! readable only by root (mode 0400 since Linux 2.6.x), which is the usual reason reading it
//! fails. With SLUB, merged caches appear once, under the name of the cache created first; see
//! [`super::aliases`] for the other names sharing each line.

use std::io;
use std::path::{Path, PathBuf};

/// The only format version this parser understands. SLUB has printed 2.1 since it replaced SLAB
/// as the default allocator; SLAB printed "2.1 (statistics)" with extra columns after the ones
/// parsed here, which are ignored.
const SUPPORTED_VERSION: &str = "2.1";

/// One cache's line of `/proc/slabinfo`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlabInfo {
    /// Cache name, e.g. `dentry` or `kmalloc-64`.
    pub name: String,
    /// Objects currently allocated. SLUB subtracts only the free objects on its per-node partial
    /// lists, not those in per-CPU slabs, so this is an upper bound on live objects.
    pub active_objs: u64,
    /// Object slots in all of the cache's slabs.
    pub num_objs: u64,
    /// Bytes per object, including metadata and alignment padding.
    pub objsize: u64,
    /// Objects per slab.
    pub objperslab: u64,
    /// Pages per slab.
    pub pagesperslab: u64,
    /// Slabs with at least one object in use.
    pub active_slabs: u64,
    /// All slabs the cache holds, including empty ones not yet given back.
    pub num_slabs: u64,
}

impl SlabInfo {
    /// Bytes the cache's slabs occupy: `num_slabs * pagesperslab * page_size`.
    ///
    /// This is what the cache costs the node (summed over caches it approximates `Slab:` in
    /// `/proc/meminfo`), as
    /// opposed to [`Self::active_bytes`], what its objects use. Saturates rather than wraps,
    /// since the numbers come from a file.
    #[must_use]
    pub fn total_bytes(&self, page_size: u64) -> u64 {
        self.num_slabs.saturating_mul(self.pagesperslab).saturating_mul(page_size)
    }

    /// Bytes the cache's allocated objects occupy: `active_objs * objsize`. Saturates.
    #[must_use]
    pub fn active_bytes(&self) -> u64 {
        self.active_objs.saturating_mul(self.objsize)
    }
}

/// Why `/proc/slabinfo` could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum SlabInfoError {
    /// The file is root-only; this is the error most users will hit, so it says what to do.
    #[error("cannot read {}: permission denied; run slabtrace as root", path.display())]
    PermissionDenied {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "slabinfo line 1: expected \"slabinfo - version: {SUPPORTED_VERSION}\", found {found:?}"
    )]
    MissingVersion { found: String },
    #[error(
        "slabinfo format version {version} is not supported (only {SUPPORTED_VERSION} is); \
         this kernel is too old or uses an allocator slabtrace does not know"
    )]
    UnsupportedVersion { version: String },
    #[error("slabinfo line {line}: {problem}")]
    Line { line: usize, problem: LineProblem },
}

/// What was wrong with one cache line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("expected at least {expected} whitespace-separated fields, found {found}")]
    TooFewFields { expected: usize, found: usize },
    #[error("field {field} is not a number: {value:?}")]
    NotANumber { field: &'static str, value: String },
    #[error("expected {expected:?} at field {position}, found {found:?}")]
    Unexpected { expected: &'static str, position: usize, found: String },
}

/// Parses the text of `/proc/slabinfo`.
///
/// The first line must carry version 2.1; the `# name` column header and blank lines are
/// skipped. Cache lines have the shape
/// `name <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit>
/// <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>`; anything
/// after `sharedavail` (SLAB's statistics columns) is ignored.
pub fn parse_slabinfo(text: &str) -> Result<Vec<SlabInfo>, SlabInfoError> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    check_version(first)?;

    let mut caches = Vec::new();
    // Line numbers are 1-based and count the version line, so they match `sed -n Np`.
    for (index, line) in lines.enumerate() {
        let line_number = index + 2;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let cache = parse_line(trimmed)
            .map_err(|problem| SlabInfoError::Line { line: line_number, problem })?;
        caches.push(cache);
    }
    Ok(caches)
}

/// Reads and parses `proc_root/slabinfo`.
pub fn read_slabinfo(proc_root: &Path) -> Result<Vec<SlabInfo>, SlabInfoError> {
    let path = proc_root.join("slabinfo");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            SlabInfoError::PermissionDenied { path: path.clone(), source }
        } else {
            SlabInfoError::Io { path: path.clone(), source }
        }
    })?;
    parse_slabinfo(&text)
}

fn check_version(first: &str) -> Result<(), SlabInfoError> {
    let Some(rest) = first.trim().strip_prefix("slabinfo - version:") else {
        return Err(SlabInfoError::MissingVersion { found: first.to_owned() });
    };
    // SLAB appended " (statistics)" after the number; only the number decides the layout of
    // the columns this parser reads.
    let version = rest.split_whitespace().next().unwrap_or_default();
    if version == SUPPORTED_VERSION {
        Ok(())
    } else {
        Err(SlabInfoError::UnsupportedVersion { version: rest.trim().to_owned() })
    }
}

fn parse_line(line: &str) -> Result<SlabInfo, LineProblem> {
    // name, 5 numbers, ":", "tunables", 3 numbers, ":", "slabdata", 3 numbers.
    const FIELDS: usize = 16;
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < FIELDS {
        return Err(LineProblem::TooFewFields { expected: FIELDS, found: fields.len() });
    }
    // Checking the literal separators catches a shifted column (a cache name with a space in
    // it, or a future format) instead of silently reading the wrong numbers.
    for (position, expected) in [(6, ":"), (7, "tunables"), (11, ":"), (12, "slabdata")] {
        if fields[position] != expected {
            return Err(LineProblem::Unexpected {
                expected,
                position: position + 1,
                found: fields[position].to_owned(),
            });
        }
    }
    let number = |position: usize, field: &'static str| {
        fields[position]
            .parse::<u64>()
            .map_err(|_| LineProblem::NotANumber { field, value: fields[position].to_owned() })
    };
    Ok(SlabInfo {
        name: fields[0].to_owned(),
        active_objs: number(1, "active_objs")?,
        num_objs: number(2, "num_objs")?,
        objsize: number(3, "objsize")?,
        objperslab: number(4, "objperslab")?,
        pagesperslab: number(5, "pagesperslab")?,
        active_slabs: number(13, "active_slabs")?,
        num_slabs: number(14, "num_slabs")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/slabinfo-6.18"));
    const MEMINFO_FIXTURE: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/meminfo-6.18"));
    const HEADER: &str = "slabinfo - version: 2.1\n\
        # name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n";

    fn with_header(body: &str) -> String {
        format!("{HEADER}{body}")
    }

    #[test]
    fn parses_real_6_18_fixture() {
        let caches = parse_slabinfo(FIXTURE).expect("fixture parses");
        // Every line after the two headers is a cache.
        assert_eq!(caches.len(), FIXTURE.lines().count() - 2);
        let bio = caches.iter().find(|c| c.name == "bio-312").expect("bio-312 present");
        assert_eq!(
            *bio,
            SlabInfo {
                name: "bio-312".into(),
                active_objs: 12,
                num_objs: 12,
                objsize: 320,
                objperslab: 12,
                pagesperslab: 1,
                active_slabs: 1,
                num_slabs: 1,
            }
        );
        assert!(caches.iter().any(|c| c.name == "kmalloc-64"));
        assert!(caches.iter().all(|c| c.active_objs <= c.num_objs));
    }

    #[test]
    fn fixture_totals_agree_with_meminfo_slab() {
        // Both fixtures were captured together; the sum over caches should land near meminfo's
        // Slab line (they are counted at slightly different moments and places), and certainly
        // not a factor of 1024 or 4096 away, which is what a unit mistake would give.
        let caches = parse_slabinfo(FIXTURE).expect("fixture parses");
        let total: u64 = caches.iter().map(|c| c.total_bytes(4096)).sum();
        let meminfo = crate::node::meminfo::parse_meminfo(MEMINFO_FIXTURE).expect("meminfo parses");
        let slab = meminfo.slab().expect("Slab line");
        let ratio = total as f64 / slab as f64;
        assert!((0.9..=1.1).contains(&ratio), "slabinfo {total} B vs meminfo Slab {slab} B");
    }

    #[test]
    fn byte_helpers() {
        let cache = SlabInfo {
            name: "dentry".into(),
            active_objs: 100,
            num_objs: 126,
            objsize: 192,
            objperslab: 21,
            pagesperslab: 1,
            active_slabs: 6,
            num_slabs: 6,
        };
        assert_eq!(cache.total_bytes(4096), 6 * 4096);
        assert_eq!(cache.active_bytes(), 100 * 192);
        let huge = SlabInfo { num_slabs: u64::MAX, active_objs: u64::MAX, ..cache };
        assert_eq!(huge.total_bytes(4096), u64::MAX);
        assert_eq!(huge.active_bytes(), u64::MAX);
    }

    #[test]
    fn header_only_is_empty() {
        assert_eq!(parse_slabinfo(HEADER).expect("parses"), Vec::new());
    }

    #[test]
    fn ignores_slab_statistics_columns() {
        let text = "slabinfo - version: 2.1 (statistics)\n\
            # name ...\n\
            dentry 100 126 192 21 1 : tunables 120 60 8 : slabdata 6 6 0 : globalstat 1 2 3 : cpustat 4 5 6 7\n";
        let caches = parse_slabinfo(text).expect("parses");
        assert_eq!(caches[0].num_slabs, 6);
    }

    #[test]
    fn rejects_missing_version_line() {
        let err =
            parse_slabinfo("dentry 1 1 1 1 1 : tunables 0 0 0 : slabdata 1 1 0\n").unwrap_err();
        assert!(matches!(err, SlabInfoError::MissingVersion { .. }), "{err}");
        assert!(matches!(parse_slabinfo("").unwrap_err(), SlabInfoError::MissingVersion { .. }));
    }

    #[test]
    fn rejects_other_versions() {
        let err = parse_slabinfo("slabinfo - version: 2.0\n").unwrap_err();
        assert!(
            matches!(err, SlabInfoError::UnsupportedVersion { ref version } if version == "2.0")
        );
        assert!(err.to_string().contains("2.0"), "{err}");
    }

    #[test]
    fn short_line_names_its_line_number() {
        let text = with_header(
            "dentry 100 126 192 21 1 : tunables 0 0 0 : slabdata 6 6 0\n\
             inode_cache 10 10 600 13 2 : tunables 0 0 0\n",
        );
        let err = parse_slabinfo(&text).unwrap_err();
        let SlabInfoError::Line { line, problem } = &err else { panic!("{err:?}") };
        assert_eq!(*line, 4);
        assert_eq!(*problem, LineProblem::TooFewFields { expected: 16, found: 11 });
        assert!(err.to_string().starts_with("slabinfo line 4:"), "{err}");
    }

    #[test]
    fn non_numeric_field_is_named() {
        let text = with_header("dentry 100 12x6 192 21 1 : tunables 0 0 0 : slabdata 6 6 0\n");
        let err = parse_slabinfo(&text).unwrap_err();
        let SlabInfoError::Line { line, problem } = &err else { panic!("{err:?}") };
        assert_eq!(*line, 3);
        assert_eq!(*problem, LineProblem::NotANumber { field: "num_objs", value: "12x6".into() });
        assert!(err.to_string().contains("num_objs"), "{err}");
    }

    #[test]
    fn shifted_columns_are_rejected() {
        // A name with a space would shift every column by one.
        let text = with_header("my cache 100 126 192 21 1 : tunables 0 0 0 : slabdata 6 6 0\n");
        let err = parse_slabinfo(&text).unwrap_err();
        assert!(
            matches!(err, SlabInfoError::Line { line: 3, problem: LineProblem::Unexpected { .. } }),
            "{err:?}"
        );
    }

    #[test]
    fn negative_numbers_are_not_numbers() {
        let text = with_header("dentry -1 126 192 21 1 : tunables 0 0 0 : slabdata 6 6 0\n");
        assert!(matches!(
            parse_slabinfo(&text).unwrap_err(),
            SlabInfoError::Line {
                problem: LineProblem::NotANumber { field: "active_objs", .. },
                ..
            }
        ));
    }

    #[test]
    fn read_missing_file_names_the_path() {
        let root = Path::new("/nonexistent-slabtrace-proc");
        let err = read_slabinfo(root).unwrap_err();
        assert!(matches!(err, SlabInfoError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent-slabtrace-proc/slabinfo"), "{err}");
    }

    #[test]
    fn permission_denied_says_to_run_as_root() {
        let err = SlabInfoError::PermissionDenied {
            path: "/proc/slabinfo".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            err.to_string(),
            "cannot read /proc/slabinfo: permission denied; run slabtrace as root"
        );
    }

    #[test]
    #[ignore = "reads the live kernel as root: `cargo xtask test` runs it"]
    fn reads_real_proc_slabinfo() {
        let caches = read_slabinfo(Path::new("/proc")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!caches.is_empty());
    }
}
