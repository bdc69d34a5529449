//! The report as a terminal table, read like slabtop: per cgroup, its top caches beneath it,
//! then the node's caches beside the kernel's own count.

use std::fmt::Write as _;

use super::{
    printable::printable,
    report::Report,
    units::{human_bytes, signed_bytes},
};
use crate::{
    attribution::{CacheUsage, Totals},
    cgroup::charged::Charged,
    rollup::PodUsage,
};

/// `charged now: slab 18M (reclaimable 17M), sock 0B, ...`: the figures a row's books have.
fn charged_line(c: &Charged) -> String {
    let figures: Vec<String> = c
        .kinds()
        .into_iter()
        .filter(|(kind, _)| !kind.starts_with("slab_"))
        .map(|(kind, v)| format!("{} {}", kind.replace('_', " "), human_bytes(v)))
        .collect();
    let slab = match (c.slab, c.slab_reclaimable) {
        (Some(slab), Some(r)) => {
            format!("slab {} ({} reclaimable), ", human_bytes(slab), human_bytes(r))
        }
        _ => String::new(),
    };
    let v1 = if c.kmem.is_some() { " (cgroup v1: no slab split)" } else { "" };
    format!("charged now: {slab}{}{v1}", figures.join(", "))
}

/// How much of the report the table shows, and by what.
#[derive(Clone, Copy, Debug)]
pub struct TableLimits {
    /// Rows (cgroups, pods or containers) shown.
    pub rows: usize,
    /// Caches shown under each row.
    pub caches_per_row: usize,
    /// Caches shown node-wide.
    pub node_caches: usize,
    /// What a row is.
    pub by: By,
    /// The rows' order.
    pub sort: Sort,
}

/// The order of the table's rows (`--sort`), largest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// Live bytes (then bytes allocated).
    #[default]
    Live,
    /// Bytes allocated.
    Allocated,
    /// Objects allocated.
    Allocs,
    /// Frees credited.
    Frees,
    /// Live bytes charged to no memory cgroup.
    Unaccounted,
}

impl Sort {
    /// Sorts `rows` in this order, largest first; ties in report order (live bytes).
    fn sort(self, rows: &mut [Row<'_>]) {
        let key = |t: &Totals| match self {
            Self::Live => t.live_bytes,
            Self::Allocated => t.alloc_bytes,
            Self::Allocs => t.allocs,
            Self::Frees => t.frees,
            Self::Unaccounted => t.unaccounted_live_bytes,
        };
        rows.sort_by(|a, b| key(&b.totals).cmp(&key(&a.totals)).then(a.totals.rank(&b.totals)));
    }
}

/// One row of the per-owner section: a cgroup, a pod or a container.
struct Row<'a> {
    name: String,
    totals: Totals,
    caches: &'a [CacheUsage],
    /// The memory controller's books (pods and containers).
    charged: Option<Charged>,
}

/// The rows for `by`, most live bytes first.
fn rows(report: &Report, by: By) -> Vec<Row<'_>> {
    macro_rules! row {
        ($name:expr, $u:expr) => {
            Row { name: $name, totals: $u.totals, caches: &$u.caches, charged: None }
        };
        ($name:expr, $u:expr, charged) => {
            Row { name: $name, totals: $u.totals, caches: &$u.caches, charged: $u.charged }
        };
    }
    match by {
        By::Cgroup => report
            .cgroups
            .iter()
            .chain(&report.interrupt)
            .map(|cg| {
                let name =
                    cg.cgroup.clone().unwrap_or_else(|| format!("(cgroup id {})", cg.cgroup_id));
                row!(if cg.alive { name } else { format!("{name} (gone)") }, cg)
            })
            .collect(),
        By::Pod => report.pods.iter().map(|p| row!(pod_name(p), p, charged)).collect(),
        By::Container => {
            let mut rows: Vec<Row<'_>> = report
                .pods
                .iter()
                .flat_map(|p| {
                    p.containers.iter().map(move |c| {
                        let container = c.name.clone().unwrap_or_else(|| {
                            c.container_id.as_deref().map_or_else(
                                || "(pod cgroup)".to_owned(),
                                |id| id.chars().take(12).collect(),
                            )
                        });
                        row!(format!("{} {container}", pod_name(p)), c, charged)
                    })
                })
                .collect();
            rows.sort_by(|a, b| a.totals.rank(&b.totals));
            rows
        }
    }
}

/// `namespace/name`, or `pod <uid>` until the runtime names it; `(deleted)` when gone.
fn pod_name(p: &PodUsage) -> String {
    let name = match (&p.namespace, &p.name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => format!("pod {}", p.uid),
    };
    if p.deleted { format!("{name} (deleted)") } else { name }
}

/// Table rows (`--by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// Per Kubernetes pod.
    Pod,
    /// Per container.
    Container,
    /// Per cgroup.
    Cgroup,
}

/// Renders `report`.
#[must_use]
pub fn render(report: &Report, limits: TableLimits) -> String {
    let mut out = String::new();
    let s = &report.sampling;
    let _ = writeln!(
        out,
        "slabtrace on {} for {:.1}s from {}; {}",
        printable(&report.node),
        report.duration_seconds,
        report.started_at,
        if s.estimated {
            format!("frees and live figures are estimates from 1 in {} addresses (± shown)", s.rate)
        } else {
            "every object tracked: figures are exact".to_owned()
        }
    );
    let _ = writeln!(out);
    render_rows(&mut out, report, limits);
    let _ = writeln!(out);
    render_node(&mut out, report, limits);
    render_findings(&mut out, report);
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
        let _ = writeln!(out, "warning: {}", printable(w));
    }
    out
}

/// The memory controller's books against the node's slab, a line.
fn render_charged(out: &mut String, report: &Report) {
    if let Some(node) = &report.charged
        && let Some(all) = &node.cgroups
    {
        let _ = match (all.slab, node.uncharged_slab_bytes) {
            (Some(slab), Some(uncharged)) => writeln!(
                out,
                "memory controller's books: slab charged to cgroups now {} of the node's {}; \
                 {} charged to no cgroup",
                human_bytes(slab),
                human_bytes(node.node_slab_bytes.unwrap_or(0)),
                human_bytes(uncharged),
            ),
            _ => writeln!(
                out,
                "memory controller's books: kernel memory charged to cgroups now {} (cgroup v1: \
                 no slab split); the node's Slab {}",
                human_bytes(all.kernel_total().unwrap_or(0)),
                human_bytes(node.node_slab_bytes.unwrap_or(0)),
            ),
        };
    }
}

/// Dying cgroups node-wide and the parents that hold some, with the pods gone from there, a
/// line (omitted when the kernel says none and no pod went).
fn render_dying(out: &mut String, report: &Report) {
    let Some(d) = &report.dying_cgroups else { return };
    let parents: Vec<String> = d
        .parents
        .iter()
        .filter(|p| p.nr_dying.unwrap_or(0) > 0 || !p.gone_pods.is_empty())
        .map(|p| {
            let gone: Vec<String> = p
                .gone_pods
                .iter()
                .map(|g| match (&g.namespace, &g.name) {
                    (Some(ns), Some(name)) => format!("{ns}/{name}"),
                    _ => g.uid.clone(),
                })
                .collect();
            let more = if p.gone_pods_more > 0 {
                format!(" +{}", p.gone_pods_more)
            } else {
                String::new()
            };
            let pinned = p
                .pinned_estimate_bytes
                .map_or_else(String::new, |b| format!(", pinning ~{}", human_bytes(b)));
            let nr = p.nr_dying.map_or_else(|| "?".to_owned(), |n| n.to_string());
            printable(&format!(
                "{} {nr}{pinned}{}",
                p.parent,
                if gone.is_empty() {
                    String::new()
                } else {
                    format!(" (gone: {}{more})", gone.join(", "))
                }
            ))
            .into_owned()
        })
        .collect();
    if d.memcg_nr_dying.unwrap_or(0) == 0 && parents.is_empty() {
        return;
    }
    let nr = d.memcg_nr_dying.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let percpu =
        d.percpu_bytes.map_or_else(String::new, |b| format!("; Percpu {}", human_bytes(b)));
    let _ = writeln!(out, "dying memory cgroups: {nr} node-wide{percpu}; {}", parents.join("; "));
}

/// What the kernel's books say, growth findings, advice and OOM kills, a line each.
fn render_findings(out: &mut String, report: &Report) {
    if let Some(t) = &report.reconciliation.total {
        let signed = |b: i64| signed_bytes(b as f64);
        let coverage = t.coverage_pct.map_or_else(
            || "(a change within 1 MiB: no coverage figure)".to_owned(),
            |p| format!("({p:.0}% of it)"),
        );
        let _ = writeln!(
            out,
            "\nkernel's books: Slab {} over the window; named caches {} in slabinfo, {} traced \
             {coverage}; live slab attributed now: {} of {} ({:.0}%; objects from before \
             tracing are nobody's)",
            signed(t.kernel_slab_delta_bytes),
            signed(t.kernel_delta_bytes),
            signed(t.traced_net_bytes),
            human_bytes(t.attributed_live_bytes),
            human_bytes(t.node_slab_bytes),
            t.attributed_share_pct,
        );
    }
    render_charged(out, report);
    render_dying(out, report);
    for g in report.growth.iter().take(5) {
        let whose =
            g.owner.as_ref().map_or_else(|| "node-wide".to_owned(), crate::frame::Owner::display);
        let _ = writeln!(
            out,
            "problematic growth: {} {}: +{} over {:.0}s ({:.1} MB/h), {:?}; reclaim scanned {} freed {}",
            printable(&whose),
            printable(&g.cache),
            human_bytes(g.finding.growth_bytes.unsigned_abs()),
            g.finding.window_seconds,
            g.finding.rate_mb_per_hour,
            g.finding.reason,
            g.finding.reclaim.scanned,
            g.finding.reclaim.freed,
        );
    }
    if let Some(advice) = &report.advice {
        let settings: Vec<String> =
            advice.settings.iter().map(|s| format!("{}={}", s.name, s.value)).collect();
        let _ = writeln!(
            out,
            "advice (from {:.0}s, `slabtrace advise` explains): {}",
            advice.observed_seconds,
            settings.join(" ")
        );
    }
    for kill in &report.oom_kills {
        let whose = match (&kill.victim.pod, &kill.victim.cgroup) {
            (Some(pod), _) => match (&pod.namespace, &pod.name) {
                (Some(ns), Some(name)) => format!("pod {ns}/{name}"),
                _ => format!("pod {}", pod.uid),
            },
            (None, Some(path)) => path.clone(),
            (None, None) => format!("cgroup {}", kill.victim.cgroup_id),
        };
        let scope = match &kill.memcg {
            Some(memcg) => format!("memcg {memcg} over its limit"),
            None => format!("{} OOM", kill.scope),
        };
        let top = kill
            .slab
            .top_holders
            .first()
            .map(|h| {
                format!(
                    "; largest slab holder {} in {}",
                    human_bytes(h.live_bytes),
                    printable(&h.cache)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "OOM kill at {}: {} (pid {}) in {}, {}; slab attributed then {} ({:.0}% charged to no memcg){top}",
            kill.at,
            printable(&kill.comm),
            kill.victim.pid,
            printable(&whose),
            printable(&scope),
            human_bytes(kill.slab.attributed_live_bytes),
            kill.slab.unaccounted_share_pct,
        );
    }
}

/// One line per row (cgroup, pod or container), its top caches beneath it.
fn render_rows(out: &mut String, report: &Report, limits: TableLimits) {
    let heading = match limits.by {
        By::Cgroup => "CGROUP",
        By::Pod => "POD",
        By::Container => "POD CONTAINER",
    };
    let _ = writeln!(
        out,
        "{heading:<44} {:<24} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "CACHE", "ALLOCS", "ALLOC", "FREES", "LIVE", "LIVE", "UNACCT"
    );
    let live_cell = |objects: u64, error: u64| {
        if error > 0 { format!("{objects}±{error}") } else { objects.to_string() }
    };
    let mut rows = rows(report, limits.by);
    limits.sort.sort(&mut rows);
    if rows.is_empty() && limits.by != By::Cgroup {
        let _ = writeln!(out, "(no Kubernetes pods in the cgroup tree; try --by cgroup)");
    }
    for row in rows.iter().take(limits.rows) {
        let _ = writeln!(
            out,
            "{:<44} {:<24} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8}",
            truncate(&row.name, 44),
            "",
            row.totals.allocs,
            human_bytes(row.totals.alloc_bytes),
            row.totals.frees,
            row.totals.live_objects,
            human_bytes(row.totals.live_bytes),
            human_bytes(row.totals.unaccounted_live_bytes),
        );
        if let Some(c) = &row.charged {
            let _ = writeln!(out, "  {}", charged_line(c));
        }
        for c in row.caches.iter().take(limits.caches_per_row) {
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
            // With --call-sites: where in the kernel these came from.
            for site in &c.call_sites {
                let _ = writeln!(out, "{:<46}from {} ({})", "", printable(&site.site), site.allocs);
            }
        }
    }
    if rows.len() > limits.rows {
        let _ = writeln!(out, "… {} more rows (--top, or --format json)", rows.len() - limits.rows);
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
            printable(&t.aliases.join(",")),
        );
    }
}

/// `s` made printable, then cut to its last `width` characters.
fn truncate(s: &str, width: usize) -> String {
    let s = printable(s);
    if s.chars().count() <= width {
        s.into_owned()
    } else {
        let keep: String = s.chars().skip(s.chars().count() - (width - 1)).collect();
        format!("…{keep}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_keep_their_end() {
        assert_eq!(truncate("/kubepods/burstable/pod1234/abcdef", 10), "…34/abcdef");
        assert_eq!(truncate("/a", 10), "/a");
    }

    #[test]
    fn rows_follow_the_sort_asked_for() {
        use crate::attribution::{CacheUsage, CgroupUsage};
        let mut report = Report::default();
        for (path, live, allocs) in [("/holds", 9000, 10), ("/churns", 100, 5000)] {
            let caches = vec![CacheUsage {
                cache: "dentry".into(),
                allocs,
                live_bytes: live,
                ..CacheUsage::default()
            }];
            report.observation.cgroups.push(CgroupUsage {
                cgroup: Some(path.into()),
                alive: true,
                totals: Totals::of(&caches),
                caches,
                ..CgroupUsage::default()
            });
        }
        let first = |sort| {
            let limits =
                TableLimits { rows: 10, caches_per_row: 0, node_caches: 0, by: By::Cgroup, sort };
            let text = render(&report, limits);
            let row = text.lines().find(|l| l.starts_with('/')).unwrap_or_default().to_owned();
            row.split_whitespace().next().unwrap_or_default().to_owned()
        };
        assert_eq!(first(Sort::Live), "/holds");
        assert_eq!(first(Sort::Allocs), "/churns");
    }

    #[test]
    fn charged_books_are_a_line_under_their_row_and_one_for_the_node() {
        use crate::{
            cgroup::{
                charged::{Charged, NodeCharged, Source},
                kubepods::Qos,
            },
            rollup::PodUsage,
        };
        let mut report = Report::default();
        let v2 = Charged {
            slab_reclaimable: Some(3 << 20),
            slab_unreclaimable: Some(1 << 20),
            slab: Some(4 << 20),
            sock: Some(0),
            kernel: Some(5 << 20),
            ..Charged::unknown(Source::CgroupV2)
        };
        let pod = |uid: &str, charged| PodUsage {
            namespace: None,
            name: None,
            uid: uid.into(),
            qos: Qos::Burstable,
            deleted: false,
            totals: Totals::default(),
            containers: Vec::new(),
            caches: Vec::new(),
            charged: Some(charged),
        };
        let v1 = Charged { kmem: Some(2 << 20), ..Charged::unknown(Source::CgroupV1) };
        report.observation.pods = vec![pod("u-2", v2), pod("u-1", v1)];
        report.observation.charged = Some(NodeCharged {
            source: Some(Source::CgroupV2),
            node_slab_bytes: Some(10 << 20),
            cgroups: Some(v2),
            uncharged_slab_bytes: Some(6 << 20),
            files_read: 2,
            skipped: 0,
        });
        let limits = TableLimits {
            rows: 10,
            caches_per_row: 0,
            node_caches: 0,
            by: By::Pod,
            sort: Sort::Live,
        };
        let text = render(&report, limits);
        let lines: Vec<&str> = text.lines().collect();
        let under = |uid: &str| {
            let i = lines.iter().position(|l| l.starts_with(&format!("pod {uid}"))).unwrap();
            lines[i + 1].trim().to_owned()
        };
        let (v2_line, v1_line) = (under("u-2"), under("u-1"));
        assert!(v2_line.starts_with("charged now: slab 4"), "{v2_line}");
        assert!(v2_line.contains("reclaimable") && v2_line.contains("kernel 5"), "{v2_line}");
        assert!(v1_line.contains("kmem 2") && v1_line.contains("no slab split"), "{v1_line}");
        let node = lines.iter().find(|l| l.starts_with("memory controller's books")).unwrap();
        assert!(node.contains("charged to no cgroup"), "{node}");
    }

    #[test]
    fn dying_cgroups_are_a_line_with_the_gone_pods_of_each_parent() {
        use crate::cgroup::dying::{DyingCgroups, DyingParent, GonePod};
        let limits = TableLimits {
            rows: 10,
            caches_per_row: 0,
            node_caches: 0,
            by: By::Pod,
            sort: Sort::Live,
        };
        let mut report = Report::default();
        report.observation.dying_cgroups = Some(DyingCgroups::default());
        assert!(!render(&report, limits).contains("dying"), "nothing dying, no line");
        let gone = |uid: &str, name: Option<&str>| GonePod {
            uid: uid.into(),
            namespace: name.map(|_| "shop".into()),
            name: name.map(Into::into),
        };
        report.observation.dying_cgroups = Some(DyingCgroups {
            memcg_nr_dying: Some(1200),
            percpu_bytes: Some(8 << 20),
            parents: vec![
                DyingParent {
                    parent: "/kubepods/burstable".into(),
                    nr_descendants: Some(3),
                    nr_dying: Some(7),
                    pinned_estimate_bytes: Some(2 << 20),
                    gone_pods: vec![gone("u-1", Some("web-0")), gone("u-2\x1b[2J", None)],
                    gone_pods_more: 5,
                },
                DyingParent {
                    parent: "/system.slice".into(),
                    nr_descendants: Some(30),
                    nr_dying: Some(0),
                    pinned_estimate_bytes: None,
                    gone_pods: Vec::new(),
                    gone_pods_more: 0,
                },
            ],
            ..DyingCgroups::default()
        });
        let text = render(&report, limits);
        let line = text.lines().find(|l| l.starts_with("dying memory cgroups: 1200")).unwrap();
        assert!(line.contains("/kubepods/burstable 7, pinning ~2"), "{line}");
        assert!(line.contains("shop/web-0") && line.contains("+5)"), "{line}");
        assert!(!line.contains('\x1b') && !line.contains("system.slice"), "{line}");
    }

    #[test]
    fn hostile_names_are_printed_escaped() {
        use crate::{
            attribution::{CacheUsage, CgroupUsage},
            oom_report::{OomReport, SlabPicture, Task},
        };
        let mut report = Report::default();
        report.observation.node = "node\x1b]0;x\x07".into();
        report.observation.cgroups.push(CgroupUsage {
            cgroup_id: 9,
            cgroup: Some("/evil\x1b[2J\nforged row".into()),
            alive: true,
            caches: vec![CacheUsage { cache: "dentry\r".into(), allocs: 1, ..Default::default() }],
            ..Default::default()
        });
        let task = Task { pid: 1, cgroup_id: 9, cgroup: Some("/evil\n".into()), ..Task::default() };
        report.oom_kills.push(OomReport {
            at: "now".into(),
            scope: "memcg".into(),
            memcg: Some("/m\x07".into()),
            victim: task.clone(),
            comm: "x\x1b[31m\u{202e}".into(),
            uid: 0,
            oom_score_adj: 0,
            trigger: task,
            meminfo: None,
            slab: SlabPicture::default(),
            incomplete: false,
        });
        report.self_stats.warnings.push("w\x1b".into());
        let limits = TableLimits {
            rows: 10,
            caches_per_row: 3,
            node_caches: 3,
            by: By::Cgroup,
            sort: Sort::Live,
        };
        let text = render(&report, limits);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(!text.contains('\u{202e}'), "{text:?}");
        // One line per row: the newline in the path did not start a row of its own.
        assert!(!text.lines().any(|l| l.starts_with("forged row")), "{text}");
        for escaped in ["\\x1b[2J\\x0aforged row", "dentry\\x0d", "x\\x1b[31m\\u{202e}", "w\\x1b"] {
            assert!(text.contains(escaped), "{escaped} in {text}");
        }
    }
}
