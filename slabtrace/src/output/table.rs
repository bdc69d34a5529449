//! The report as a terminal table, read like slabtop: per cgroup, its top caches beneath it,
//! then the node's caches beside the kernel's own count.

use std::fmt::Write as _;

use super::report::Report;

/// How much of the report the table shows.
#[derive(Clone, Copy, Debug)]
pub struct TableLimits {
    /// cgroups shown.
    pub cgroups: usize,
    /// Caches shown under each cgroup.
    pub caches_per_cgroup: usize,
    /// Caches shown node-wide.
    pub node_caches: usize,
}

/// Bytes with a binary unit, three significant figures: `512B`, `12.3K`, `1.81G`.
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if value < 10.0 {
        format!("{value:.2}{unit}")
    } else if value < 100.0 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.0}{unit}")
    }
}

/// Renders `report`.
#[must_use]
pub fn render(report: &Report, limits: TableLimits) -> String {
    let mut out = String::new();
    let s = &report.sampling;
    let _ = writeln!(
        out,
        "slabtrace on {} for {:.1}s from {}; {}",
        report.node,
        report.duration_seconds,
        report.started_at,
        if s.estimated {
            format!("frees and live figures are estimates from 1 in {} addresses (± shown)", s.rate)
        } else {
            "every object tracked: figures are exact".to_owned()
        }
    );
    let _ = writeln!(out);
    render_cgroups(&mut out, report, limits);
    let _ = writeln!(out);
    render_node(&mut out, report, limits);
    let me = &report.self_stats;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "self: {} alloc + {} free events, {} lost; live map {}/{} entries, {} evicted, {} missed frees; BPF maps {}",
        me.alloc_events,
        me.free_events,
        me.lost_events,
        me.live_entries,
        me.live_capacity,
        me.evictions,
        me.missed_frees,
        human_bytes(me.map_bytes),
    );
    for w in &me.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// One line per cgroup (and the interrupt bucket), its top caches beneath it.
fn render_cgroups(out: &mut String, report: &Report, limits: TableLimits) {
    let _ = writeln!(
        out,
        "{:<44} {:<24} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "CGROUP", "CACHE", "ALLOCS", "ALLOC", "FREES", "LIVE", "LIVE", "UNACCT"
    );
    let live_cell = |objects: u64, error: u64| {
        if error > 0 { format!("{objects}±{error}") } else { objects.to_string() }
    };
    for cg in report.cgroups.iter().chain(&report.interrupt).take(limits.cgroups) {
        let name = cg.cgroup.clone().unwrap_or_else(|| format!("(cgroup id {})", cg.cgroup_id));
        let name = if cg.alive { name } else { format!("{name} (gone)") };
        let _ = writeln!(
            out,
            "{:<44} {:<24} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8}",
            truncate(&name, 44),
            "",
            cg.allocs,
            human_bytes(cg.alloc_bytes),
            cg.frees,
            cg.live_objects,
            human_bytes(cg.live_bytes),
            human_bytes(cg.unaccounted_live_bytes),
        );
        for c in cg.caches.iter().take(limits.caches_per_cgroup) {
            let _ = writeln!(
                out,
                "{:<44} {:<24} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8}",
                "",
                truncate(&c.cache, 24),
                c.allocs,
                human_bytes(c.alloc_bytes),
                c.frees,
                live_cell(c.live_objects, c.live_objects_error),
                human_bytes(c.live_bytes),
                human_bytes(c.unaccounted_live_bytes),
            );
        }
    }
    if report.cgroups.len() > limits.cgroups {
        let _ = writeln!(
            out,
            "… {} more cgroups (--top, or --format json)",
            report.cgroups.len() - limits.cgroups
        );
    }
}

/// The node's caches, with the kernel's own count beside slabtrace's.
fn render_node(out: &mut String, report: &Report, limits: TableLimits) {
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>10} {:>9} {:>8} {:>10}  ALIASES",
        "NODE CACHE", "ALLOCS", "FREES", "UNTRACKED", "NET", "LIVE", "SLABINFO Δ"
    );
    for c in report.caches.iter().take(limits.node_caches) {
        let t = &c.totals;
        let slabinfo =
            c.slabinfo.map_or_else(|| "-".to_owned(), |s| s.active_objs_delta.to_string());
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>9} {:>10} {:>9} {:>8} {:>10}  {}",
            truncate(&t.cache, 28),
            t.allocs,
            t.frees,
            t.untracked_frees,
            t.net_objects,
            human_bytes(t.live_bytes),
            slabinfo,
            t.aliases.join(","),
        );
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let keep: String = s.chars().skip(s.chars().count() - (width - 1)).collect();
        format!("…{keep}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1.00K");
        assert_eq!(human_bytes(1536 * 1024), "1.50M");
        assert_eq!(human_bytes(123 * 1024 * 1024 * 1024), "123G");
    }

    #[test]
    fn long_paths_keep_their_end() {
        assert_eq!(truncate("/kubepods/burstable/pod1234/abcdef", 10), "…34/abcdef");
        assert_eq!(truncate("/a", 10), "/a");
    }
}
