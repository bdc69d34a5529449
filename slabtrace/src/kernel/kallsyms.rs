//! Kernel addresses to names, from /proc/kallsyms: the `call_site` of an allocation
//! (`ext4_alloc_inode+0x1d`) and a shrinker's scan function (`super_cache_scan`).
//!
//! Addresses read as zero unless the reader may see them (`kptr_restrict`; root with
//! `CAP_SYSLOG` may); then nothing can be named and [`Kallsyms::read`] says so. Only text
//! symbols (`t`/`T`) are kept: call sites and callbacks are code.

use std::{
    fmt,
    hash::{BuildHasher as _, RandomState},
    path::Path,
    sync::OnceLock,
};

/// A kernel address that has no name, as it may be shown: `unnamed-3fa2c1d0`, a keyed hash
/// of it. The address itself would tell anyone who reads the report, the events or the
/// metrics where the kernel's text and heap are (what `kptr_restrict` hides, and KASLR
/// depends on). The key is drawn once per process, so one address keeps one label for the
/// process's life and two addresses get two labels (up to hash collisions), which is all a
/// reader can use them for.
#[must_use]
pub fn unnamed(addr: u64) -> String {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    let hash = KEY.get_or_init(RandomState::new).hash_one(addr);
    format!("unnamed-{:08x}", hash >> 32)
}

/// A sorted table of kernel text symbols.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kallsyms {
    /// (address, name), sorted by address.
    symbols: Vec<(u64, String)>,
}

/// A symbol and the offset into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// Function name (with `[module]` for module symbols).
    pub name: &'a str,
    /// Bytes past its start.
    pub offset: u64,
}

impl fmt::Display for Symbol<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.name, self.offset)
    }
}

/// /proc/kallsyms could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Every address is zero.
    #[error(
        "/proc/kallsyms shows no addresses (kptr_restrict): kernel call sites stay unnamed; run \
         slabtrace as root with CAP_SYSLOG, or set kernel.kptr_restrict=1"
    )]
    Restricted,
}

impl Kallsyms {
    /// Parses the text of /proc/kallsyms (`address type name [module]` per line).
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                if addr == 0 || !matches!(kind, "t" | "T") {
                    return None;
                }
                Some((
                    addr,
                    match f.next() {
                        Some(module) => format!("{name} {module}"),
                        None => name.to_owned(),
                    },
                ))
            })
            .collect();
        symbols.sort_by_key(|(a, _)| *a);
        symbols.dedup_by_key(|(a, _)| *a);
        Self { symbols }
    }

    /// Reads `<proc_root>/kallsyms`.
    pub fn read(proc_root: &Path) -> Result<Self, KallsymsError> {
        let path = proc_root.join("kallsyms");
        let text = std::fs::read_to_string(&path)
            .map_err(|source| KallsymsError::Read { path: path.display().to_string(), source })?;
        let table = Self::parse(&text);
        if table.symbols.is_empty() {
            return Err(KallsymsError::Restricted);
        }
        Ok(table)
    }

    /// The symbol `addr` lies in, if any.
    #[must_use]
    pub fn lookup(&self, addr: u64) -> Option<Symbol<'_>> {
        let i = self.symbols.partition_point(|(a, _)| *a <= addr).checked_sub(1)?;
        let (start, name) = &self.symbols[i];
        Some(Symbol { name, offset: addr - start })
    }

    /// Where the functions named `names` lie, in address order: each from its start to the
    /// next symbol's. A compiler's split-off parts count as the function's own
    /// (`out_of_memory.cold` is `out_of_memory`); module symbols do not match.
    #[must_use]
    pub fn function_ranges(&self, names: &[&str]) -> Vec<std::ops::Range<u64>> {
        self.symbols
            .iter()
            .enumerate()
            .filter(|(_, (_, name))| names.contains(&name.split('.').next().unwrap_or(name)))
            .map(|(i, (start, _))| {
                *start..self.symbols.get(i + 1).map_or(u64::MAX, |(next, _)| *next)
            })
            .collect()
    }

    /// `addr` as `name+0xoff`, or as [`unnamed`] when unknown.
    #[must_use]
    pub fn name(&self, addr: u64) -> String {
        self.lookup(addr).map_or_else(|| unnamed(addr), |s| s.to_string())
    }

    /// How many symbols the table has.
    #[must_use]
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_addresses_say_nothing_of_where_they_are() {
        let text = 0xffff_ffff_8123_4567_u64;
        let heap = 0xffff_8880_0abc_d000_u64;
        let (a, b) = (unnamed(text), unnamed(heap));
        assert_eq!(unnamed(text), a, "one address, one label");
        assert_ne!(a, b);
        for label in [&a, &b] {
            assert!(label.starts_with("unnamed-") && label.len() == 16, "{label}");
            assert!(!label.contains("ffff") || !label.contains("8123"), "{label}");
        }
        assert_eq!(Kallsyms::default().name(text), a);
    }

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff81234500 t ext4_alloc_inode
ffffffff81234600 T super_cache_scan
ffffffff81300000 D some_data
ffffffffc0001000 t xfs_fs_alloc_inode\t[xfs]
0000000000000000 T hidden
";

    #[test]
    fn addresses_resolve_to_the_enclosing_text_symbol() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(k.len(), 4);
        assert_eq!(k.name(0xffff_ffff_8123_451d), "ext4_alloc_inode+0x1d");
        assert_eq!(k.name(0xffff_ffff_8123_4600), "super_cache_scan+0x0");
        assert_eq!(k.name(0xffff_ffff_c000_1010), "xfs_fs_alloc_inode [xfs]+0x10");
        // Before the first symbol: unknown, shown without the address.
        assert_eq!(k.name(0x1000), unnamed(0x1000));
    }

    #[test]
    fn a_restricted_table_is_empty() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 t foo\n");
        assert!(k.is_empty());
        assert_eq!(k.lookup(0xffff_ffff_8100_0000), None);
    }
}
