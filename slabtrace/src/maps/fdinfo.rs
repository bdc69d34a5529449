//! slabtrace's own kernel footprint, from /proc/self/fdinfo: the memory its BPF maps hold
//! (`memlock`) and, per program, the runs the kernel skipped because the program was already
//! running on that CPU (`recursion_misses`: an event in an interrupt that arrived during a
//! probe).

use std::{collections::BTreeMap, fs, path::Path};

/// Totals over every BPF map and program this process holds open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfFootprint {
    /// Kernel memory of the maps, bytes.
    pub map_bytes: u64,
    /// Kernel memory of the programs, bytes.
    pub prog_bytes: u64,
    /// Skipped runs per program id.
    pub recursion_misses: BTreeMap<u32, u64>,
}

impl BpfFootprint {
    /// Skipped runs of the programs in `ids`.
    #[must_use]
    pub fn misses_of(&self, ids: &[u32]) -> u64 {
        ids.iter().filter_map(|id| self.recursion_misses.get(id)).sum()
    }
}

/// Adds one fdinfo text to `acc`. Files of other fd kinds have neither `map_type` nor
/// `prog_type` and add nothing.
pub fn add_fdinfo(acc: &mut BpfFootprint, text: &str) {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok())
    };
    let is_map = text.lines().any(|l| l.starts_with("map_type:"));
    let is_prog = text.lines().any(|l| l.starts_with("prog_type:"));
    if is_map {
        acc.map_bytes += field("memlock:").unwrap_or(0);
    }
    if is_prog {
        acc.prog_bytes += field("memlock:").unwrap_or(0);
        if let Some(id) = field("prog_id:").and_then(|id| u32::try_from(id).ok()) {
            *acc.recursion_misses.entry(id).or_default() += field("recursion_misses:").unwrap_or(0);
        }
    }
}

/// Reads every fd of this process. fds that close meanwhile are skipped.
#[must_use]
pub fn read_self(proc_root: &Path) -> BpfFootprint {
    let mut acc = BpfFootprint::default();
    let Ok(dir) = fs::read_dir(proc_root.join("self/fdinfo")) else {
        return acc;
    };
    for entry in dir.flatten() {
        if let Ok(text) = fs::read_to_string(entry.path()) {
            add_fdinfo(&mut acc, &text);
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t9\n\
                       key_size:\t8\nvalue_size:\t16\nmax_entries:\t262144\nmap_flags:\t0x0\n\
                       map_extra:\t0x0\nmemlock:\t21004288\nmap_id:\t42\nfrozen:\t0\n";
    const PROG: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t26\n\
                        prog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\n\
                        prog_id:\t77\nrun_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t3\n\
                        verified_insns:\t120\n";

    #[test]
    fn sums_maps_and_programs() {
        let mut acc = BpfFootprint::default();
        add_fdinfo(&mut acc, MAP);
        add_fdinfo(&mut acc, MAP);
        add_fdinfo(&mut acc, PROG);
        add_fdinfo(&mut acc, "pos:\t0\nflags:\t0100002\nmnt_id:\t25\nino:\t7\n");
        assert_eq!(
            acc,
            BpfFootprint {
                map_bytes: 2 * 21_004_288,
                prog_bytes: 4096,
                recursion_misses: BTreeMap::from([(77, 3)])
            }
        );
        assert_eq!(acc.misses_of(&[77, 78]), 3);
        assert_eq!(acc.misses_of(&[]), 0);
    }

    #[test]
    fn this_process_reads_without_error() {
        // No BPF fds here: all zero, and no panic on ordinary fds.
        assert_eq!(read_self(Path::new("/proc")), BpfFootprint::default());
    }
}
