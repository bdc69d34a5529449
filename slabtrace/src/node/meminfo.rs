//! `/proc/meminfo`, converted to bytes: the node-wide totals (`Slab`, `SReclaimable`,
//! `SUnreclaim`, `MemAvailable`, ...) that per-cache and per-cgroup numbers are set against.
//!
//! Every line is `Key: value` with an optional ` kB` unit. Values in kB are multiplied by 1024
//! (the kernel's "kB" is KiB); unitless values (`HugePages_Total` and friends, which are page
//! counts) are kept as they are, so [`MemInfo::get`] returns bytes for everything that has a
//! size. Keys are kept as the kernel spells them, so a key added by a newer kernel is still
//! available through [`MemInfo::get`] without a code change.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The parsed contents of `/proc/meminfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// Key as the kernel spells it (e.g. `Active(anon)`) → bytes, or a plain count for
    /// unitless lines.
    values: BTreeMap<String, u64>,
}

impl MemInfo {
    /// The value of `key` (spelled as in the file, without the colon) in bytes; unitless lines
    /// (page counts such as `HugePages_Total`) as they are. `None` if this kernel has no such
    /// line.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<u64> {
        self.values.get(key).copied()
    }

    /// `Slab`: all slab memory, reclaimable and not.
    #[must_use]
    pub fn slab(&self) -> Option<u64> {
        self.get("Slab")
    }

    /// `SReclaimable`: slab memory the kernel can give back under pressure (dentries, inodes).
    #[must_use]
    pub fn sreclaimable(&self) -> Option<u64> {
        self.get("SReclaimable")
    }

    /// `SUnreclaim`: slab memory that stays until its owner frees it.
    #[must_use]
    pub fn sunreclaim(&self) -> Option<u64> {
        self.get("SUnreclaim")
    }

    /// `MemAvailable` (Linux 3.14+): the kernel's estimate of memory available for new work.
    #[must_use]
    pub fn mem_available(&self) -> Option<u64> {
        self.get("MemAvailable")
    }

    /// `KernelStack`: memory in kernel stacks, which is not slab but grows with the same pods.
    #[must_use]
    pub fn kernel_stack(&self) -> Option<u64> {
        self.get("KernelStack")
    }

    /// `PageTables`: memory in page tables, likewise kernel memory outside the slab.
    #[must_use]
    pub fn page_tables(&self) -> Option<u64> {
        self.get("PageTables")
    }
}

/// Why `/proc/meminfo` could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum MemInfoError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("meminfo line {line}: {problem}")]
    Line { line: usize, problem: LineProblem },
}

/// What was wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("no ':' between key and value")]
    NoColon,
    #[error("empty key")]
    EmptyKey,
    #[error("value of {key} is not a number: {value:?}")]
    NotANumber { key: String, value: String },
    #[error("value of {key} has unknown unit {unit:?} (expected kB or none)")]
    UnknownUnit { key: String, unit: String },
    #[error("value of {key} does not fit in 64 bits as bytes")]
    Overflow { key: String },
}

/// Parses the text of `/proc/meminfo`. Blank lines are skipped; a repeated key keeps its last
/// value (the kernel never repeats one).
pub fn parse_meminfo(text: &str) -> Result<MemInfo, MemInfoError> {
    let mut values = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) =
            parse_line(line).map_err(|problem| MemInfoError::Line { line: index + 1, problem })?;
        values.insert(key, value);
    }
    Ok(MemInfo { values })
}

/// Reads and parses `proc_root/meminfo`.
pub fn read_meminfo(proc_root: &Path) -> Result<MemInfo, MemInfoError> {
    let path = proc_root.join("meminfo");
    let text = std::fs::read_to_string(&path)
        .map_err(|source| MemInfoError::Io { path: path.clone(), source })?;
    parse_meminfo(&text)
}

fn parse_line(line: &str) -> Result<(String, u64), LineProblem> {
    let (key, rest) = line.split_once(':').ok_or(LineProblem::NoColon)?;
    let key = key.trim();
    if key.is_empty() {
        return Err(LineProblem::EmptyKey);
    }
    let mut words = rest.split_whitespace();
    let value = words.next().unwrap_or_default();
    let number = value
        .parse::<u64>()
        .map_err(|_| LineProblem::NotANumber { key: key.to_owned(), value: value.to_owned() })?;
    let multiplier = match (words.next(), words.next()) {
        (None, None) => 1,
        (Some("kB"), None) => 1024,
        (unit, extra) => {
            let unit = [unit, extra].into_iter().flatten().collect::<Vec<_>>().join(" ");
            return Err(LineProblem::UnknownUnit { key: key.to_owned(), unit });
        }
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| LineProblem::Overflow { key: key.to_owned() })?;
    Ok((key.to_owned(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/meminfo-6.18"));

    #[test]
    fn parses_real_6_18_fixture() {
        let info = parse_meminfo(FIXTURE).expect("fixture parses");
        assert_eq!(info.values.len(), FIXTURE.lines().count());
        assert_eq!(info.slab(), Some(103_520 * 1024));
        assert_eq!(info.sreclaimable(), Some(80_460 * 1024));
        assert_eq!(info.sunreclaim(), Some(23_060 * 1024));
        assert_eq!(info.mem_available(), Some(24_185_992 * 1024));
        assert_eq!(info.kernel_stack(), Some(1_316 * 1024));
        assert_eq!(info.page_tables(), Some(1_348 * 1024));
        // Keys with parentheses are kept verbatim.
        assert!(info.get("Active(anon)").is_some());
        // The largest value on the node still fits in bytes.
        assert_eq!(info.get("VmallocTotal"), Some(34_359_738_367 * 1024));
        // Slab is the sum of its two halves.
        assert_eq!(
            info.slab(),
            Some(info.sreclaimable().unwrap_or(0) + info.sunreclaim().unwrap_or(0))
        );
    }

    #[test]
    fn unitless_lines_are_kept_as_counts() {
        let info = parse_meminfo("HugePages_Total:       3\nHugepagesize:       2048 kB\n")
            .expect("parses");
        assert_eq!(info.get("HugePages_Total"), Some(3));
        assert_eq!(info.get("Hugepagesize"), Some(2048 * 1024));
    }

    #[test]
    fn missing_keys_are_none() {
        let info = parse_meminfo("MemTotal: 1 kB\n").expect("parses");
        assert_eq!(info.mem_available(), None);
        assert_eq!(info.slab(), None);
        assert_eq!(parse_meminfo("").expect("parses"), MemInfo::default());
    }

    #[test]
    fn non_numeric_value_names_line_and_key() {
        let err = parse_meminfo("MemTotal: 1 kB\nSlab: lots kB\n").unwrap_err();
        let MemInfoError::Line { line, problem } = &err else { panic!("{err:?}") };
        assert_eq!(*line, 2);
        assert_eq!(*problem, LineProblem::NotANumber { key: "Slab".into(), value: "lots".into() });
        assert_eq!(err.to_string(), "meminfo line 2: value of Slab is not a number: \"lots\"");
    }

    #[test]
    fn short_and_malformed_lines_are_rejected() {
        assert!(matches!(
            parse_meminfo("MemTotal\n").unwrap_err(),
            MemInfoError::Line { line: 1, problem: LineProblem::NoColon }
        ));
        assert!(matches!(
            parse_meminfo("MemTotal:\n").unwrap_err(),
            MemInfoError::Line { problem: LineProblem::NotANumber { .. }, .. }
        ));
        assert!(matches!(
            parse_meminfo(": 5 kB\n").unwrap_err(),
            MemInfoError::Line { problem: LineProblem::EmptyKey, .. }
        ));
        assert!(matches!(
            parse_meminfo("MemTotal: 5 MB\n").unwrap_err(),
            MemInfoError::Line { problem: LineProblem::UnknownUnit { .. }, .. }
        ));
        assert!(matches!(
            parse_meminfo("MemTotal: 5 kB extra\n").unwrap_err(),
            MemInfoError::Line { problem: LineProblem::UnknownUnit { .. }, .. }
        ));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let text = format!("MemTotal: {} kB\n", u64::MAX / 2);
        assert!(matches!(
            parse_meminfo(&text).unwrap_err(),
            MemInfoError::Line { problem: LineProblem::Overflow { .. }, .. }
        ));
    }

    #[test]
    fn read_missing_file_names_the_path() {
        let err = read_meminfo(Path::new("/nonexistent-slabtrace-proc")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-slabtrace-proc/meminfo"), "{err}");
    }

    #[test]
    fn reads_real_proc_meminfo() {
        let info = read_meminfo(Path::new("/proc")).expect("/proc/meminfo is world-readable");
        assert!(info.get("MemTotal").is_some_and(|total| total > 0));
    }
}
