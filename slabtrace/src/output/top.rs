//! The `slabtrace top` view: what the screen shows of the latest [`Interval`] and how key
//! presses change it. Pure: the state is built from an `Interval`, keys are crossterm
//! [`KeyEvent`]s and drawing goes to any ratatui backend, so every rule here is tested on a
//! `TestBackend`; the terminal and the loop are in [`crate::commands::top`].
//!
//! A row is one owner (pod, cgroup, interrupt context) × one cache, or with `p` one owner's
//! caches summed. Live figures are cumulative since the probes were attached; rates
//! (allocations and frees per second, growth of live bytes per second) are those of the last
//! interval, so a row that did not change in it shows 0/s beside its live bytes.

use std::{cmp::Ordering, collections::BTreeMap, collections::HashMap, time::Duration};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table},
};

use crate::{
    frame::{Change, OwnerKey},
    output::{
        printable::printable,
        report::KernelMemory,
        units::{count, human_bytes, objects, signed_bytes},
    },
    pipeline::Interval,
};

/// What the rows are ordered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// Live bytes (`l`).
    Live,
    /// Allocations per second (`a`).
    Allocs,
    /// Frees per second (`f`).
    Frees,
    /// Growth of live bytes per second (`g`).
    Growth,
    /// Owner name (`n`).
    Name,
    /// Cache name, or the number of caches when rows are per owner (`c`).
    Cache,
    /// What the memory controller charges the pod (slab, or all kernel memory on cgroup v1),
    /// objects from before tracing included (`k`).
    Charged,
}

impl Sort {
    /// Figures read best largest first; names read best in alphabetical order.
    fn descending(self, group: Group) -> bool {
        match self {
            Self::Name => false,
            Self::Cache => group == Group::Owners,
            _ => true,
        }
    }
}

/// What one row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// One owner × one cache.
    Caches,
    /// One owner, its caches summed.
    Owners,
}

/// What a key press asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The view changed: draw it again.
    Redraw,
    /// Leave.
    Quit,
    /// Not a key of ours.
    Ignore,
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    /// Whose (the grouping key).
    pub owner_key: OwnerKey,
    /// Owner as shown: `namespace/name`, `pod <uid>`, the cgroup path; `(gone)` when it is.
    pub owner: String,
    /// The cache; empty when rows are per owner.
    pub cache: String,
    /// Caches summed in this row (1 per owner × cache).
    pub caches: usize,
    /// Bytes still live.
    pub live_bytes: u64,
    /// Objects still live.
    pub live_objects: u64,
    /// Objects allocated per second over the last interval.
    pub allocs_per_second: f64,
    /// Objects freed per second over the last interval.
    pub frees_per_second: f64,
    /// Change of live bytes per second over the last interval.
    pub growth_per_second: f64,
    /// Live bytes charged to no memcg.
    pub unaccounted_live_bytes: u64,
    /// The pod's books (charged slab, or all kernel memory on cgroup v1), the same on each of
    /// its rows; `None` for other owners and unread books.
    pub charged_bytes: Option<u64>,
}

impl TopRow {
    /// A row of an owner with no cache and nothing traced: the start of a per-owner sum, or
    /// a pod only the memory controller's books know of.
    fn nothing_traced(owner_key: OwnerKey, owner: String, charged_bytes: Option<u64>) -> Self {
        Self {
            owner_key,
            owner,
            cache: String::new(),
            caches: 0,
            live_bytes: 0,
            live_objects: 0,
            allocs_per_second: 0.0,
            frees_per_second: 0.0,
            growth_per_second: 0.0,
            unaccounted_live_bytes: 0,
            charged_bytes,
        }
    }
}

/// What the view keeps of one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalView {
    /// Which interval.
    pub seq: u64,
    /// The node's name.
    pub node: String,
    /// The interval's real length, seconds.
    pub seconds: f64,
    /// /proc/meminfo's kernel memory.
    pub meminfo: Option<KernelMemory>,
    /// Events the BPF programs handled per second.
    pub events_per_second: f64,
    /// N of the 1-in-N address sample.
    pub sample_rate: u64,
    /// slabtrace's own resident memory.
    pub rss_bytes: u64,
    /// The session's warnings, one sentence each.
    pub warnings: Vec<String>,
    /// Owner × cache rows, unsorted, then one row with no cache (`caches` 0) per pod that
    /// only the memory controller's books know of: shown per owner.
    pub rows: Vec<TopRow>,
    /// The memory controller's books against the node's Slab.
    pub charged: Option<crate::cgroup::charged::NodeCharged>,
    /// Dying memory cgroups node-wide.
    pub dying_memcgs: Option<u64>,
    /// /proc/meminfo's Percpu, which dying cgroups grow.
    pub percpu_bytes: Option<u64>,
}

impl IntervalView {
    /// The rows of `interval`: every owner × cache with live bytes or activity in the
    /// interval. Rows with neither (everything freed long ago) are left out: slabtrace keeps
    /// them until their cgroup is gone, and they would push the useful rows off the screen.
    #[must_use]
    pub fn of(interval: &Interval) -> Self {
        let changed: HashMap<(&OwnerKey, &str), &Change> =
            interval.changes.iter().map(|c| ((&c.owner, c.cache.as_str()), c)).collect();
        let books: HashMap<&str, u64> = interval
            .report
            .pods
            .iter()
            .filter_map(|p| Some((p.uid.as_str(), p.charged.as_ref()?.slab_or_kernel()?)))
            .collect();
        let charged_of = |key: &OwnerKey| match key {
            OwnerKey::Pod(uid) => books.get(uid.as_str()).copied(),
            _ => None,
        };
        let seconds = interval.seconds.max(1e-3);
        let mut rows: Vec<TopRow> = interval
            .frame
            .rows
            .iter()
            .filter_map(|((key, cache), row)| {
                let change = changed.get(&(key, cache.as_str()));
                if row.live_bytes == 0 && change.is_none() {
                    return None;
                }
                let owner = interval.frame.owners.get(key).map_or_else(
                    || format!("{key:?}"),
                    |o| if o.gone() { format!("{} (gone)", o.display()) } else { o.display() },
                );
                let (allocs, frees, growth) = change.map_or((0.0, 0.0, 0.0), |c| {
                    (c.allocs as f64, c.frees as f64, c.live_bytes_delta as f64)
                });
                Some(TopRow {
                    owner_key: key.clone(),
                    owner,
                    cache: cache.clone(),
                    caches: 1,
                    live_bytes: row.live_bytes,
                    live_objects: row.live_objects,
                    allocs_per_second: allocs / seconds,
                    frees_per_second: frees / seconds,
                    growth_per_second: growth / seconds,
                    unaccounted_live_bytes: row.unaccounted_live_bytes,
                    charged_bytes: charged_of(key),
                })
            })
            .collect();
        // Pods nothing was traced for yet (their objects are all from before tracing): the
        // books are all there is of them, and on a sick node they are the suspects.
        let traced: std::collections::HashSet<OwnerKey> =
            rows.iter().map(|r| r.owner_key.clone()).collect();
        for pod in &interval.report.pods {
            let key = OwnerKey::Pod(pod.uid.clone());
            if traced.contains(&key) {
                continue;
            }
            let Some(figure) = charged_of(&key) else { continue };
            let owner = crate::frame::Owner::Pod {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                qos: pod.qos,
                deleted: pod.deleted,
            };
            rows.push(TopRow::nothing_traced(key, owner.display(), Some(figure)));
        }
        let dying = interval.report.dying_cgroups.as_ref();
        Self {
            seq: interval.seq,
            node: interval.node.clone(),
            seconds: interval.seconds,
            meminfo: interval.meminfo,
            events_per_second: interval.events_per_second,
            sample_rate: interval.report.sampling.rate.max(1),
            rss_bytes: interval.process.rss_bytes,
            warnings: interval.report.self_stats.warnings.clone(),
            rows,
            charged: interval.report.charged.clone().filter(|c| c.source.is_some()),
            dying_memcgs: dying.and_then(|d| d.memcg_nr_dying),
            percpu_bytes: dying.and_then(|d| d.percpu_bytes),
        }
    }
}

/// Per-owner totals of owner × cache rows.
fn by_owner(rows: &[TopRow]) -> Vec<TopRow> {
    let mut owners: BTreeMap<&OwnerKey, TopRow> = BTreeMap::new();
    for r in rows {
        let sum = owners.entry(&r.owner_key).or_insert_with(|| {
            TopRow::nothing_traced(r.owner_key.clone(), r.owner.clone(), r.charged_bytes)
        });
        sum.caches += r.caches;
        sum.live_bytes += r.live_bytes;
        sum.live_objects += r.live_objects;
        sum.allocs_per_second += r.allocs_per_second;
        sum.frees_per_second += r.frees_per_second;
        sum.growth_per_second += r.growth_per_second;
        sum.unaccounted_live_bytes += r.unaccounted_live_bytes;
    }
    owners.into_values().collect()
}

/// `rows` grouped and ordered. Ties go by live bytes (largest first), then owner and cache
/// names, so equal rows do not swap places between refreshes.
#[must_use]
pub fn arrange(rows: &[TopRow], group: Group, sort: Sort, reverse: bool) -> Vec<TopRow> {
    let mut rows = match group {
        Group::Caches => rows.iter().filter(|r| r.caches > 0).cloned().collect(),
        Group::Owners => by_owner(rows),
    };
    let key = |a: &TopRow, b: &TopRow| -> Ordering {
        match sort {
            Sort::Live => a.live_bytes.cmp(&b.live_bytes),
            Sort::Allocs => a.allocs_per_second.total_cmp(&b.allocs_per_second),
            Sort::Frees => a.frees_per_second.total_cmp(&b.frees_per_second),
            Sort::Growth => a.growth_per_second.total_cmp(&b.growth_per_second),
            Sort::Name => a.owner.cmp(&b.owner),
            Sort::Cache if group == Group::Owners => a.caches.cmp(&b.caches),
            Sort::Cache => a.cache.cmp(&b.cache),
            Sort::Charged => a.charged_bytes.cmp(&b.charged_bytes),
        }
    };
    let flip = sort.descending(group) != reverse;
    rows.sort_by(|a, b| {
        let primary = if flip { key(b, a) } else { key(a, b) };
        primary
            .then_with(|| b.live_bytes.cmp(&a.live_bytes))
            .then_with(|| a.owner.cmp(&b.owner))
            .then_with(|| a.cache.cmp(&b.cache))
    });
    rows
}

/// The view: the latest snapshot and how the user wants to see it.
#[derive(Debug)]
pub struct TopView {
    refresh: Duration,
    snapshot: Option<IntervalView>,
    sort: Sort,
    reverse: bool,
    group: Group,
    /// First row shown.
    scroll: usize,
    /// Rows that fit in the table at the last draw (what PgUp/PgDn move by).
    page: usize,
    /// Why the last interval failed, until one succeeds.
    error: Option<String>,
    /// The last log line written while the screen was up.
    log: Option<String>,
}

impl TopView {
    /// An empty view refreshed every `refresh`, ordered by `sort`.
    #[must_use]
    pub fn new(refresh: Duration, sort: Sort) -> Self {
        Self {
            refresh,
            snapshot: None,
            sort,
            reverse: false,
            group: Group::Caches,
            scroll: 0,
            page: 1,
            error: None,
            log: None,
        }
    }

    /// Takes in a new interval.
    pub fn update(&mut self, interval: &Interval) {
        self.snapshot = Some(IntervalView::of(interval));
        self.error = None;
        self.clamp_scroll();
    }

    /// Says that an interval could not be read (shown until one is).
    pub fn failed(&mut self, error: String) {
        self.error = Some(error);
    }

    /// Shows a log line (a warning slabtrace wrote while the screen was up).
    pub fn log(&mut self, line: String) {
        self.log = Some(line);
    }

    /// The current order.
    #[cfg(test)]
    #[must_use]
    pub fn sort(&self) -> (Sort, bool) {
        (self.sort, self.reverse)
    }

    /// The rows in the order shown.
    #[must_use]
    pub fn rows(&self) -> Vec<TopRow> {
        self.snapshot
            .as_ref()
            .map(|s| arrange(&s.rows, self.group, self.sort, self.reverse))
            .unwrap_or_default()
    }

    fn row_count(&self) -> usize {
        match (&self.snapshot, self.group) {
            (None, _) => 0,
            (Some(s), Group::Caches) => s.rows.iter().filter(|r| r.caches > 0).count(),
            (Some(s), Group::Owners) => by_owner(&s.rows).len(),
        }
    }

    fn clamp_scroll(&mut self) {
        let max = self.row_count().saturating_sub(self.page.max(1));
        self.scroll = self.scroll.min(max);
    }

    fn sort_by(&mut self, sort: Sort) -> Action {
        // A new column starts in its natural direction; `r` is there to turn it around.
        if self.sort != sort {
            self.sort = sort;
            self.reverse = false;
        }
        self.scroll = 0;
        Action::Redraw
    }

    fn scroll_by(&mut self, rows: isize) -> Action {
        self.scroll = self.scroll.saturating_add_signed(rows);
        self.clamp_scroll();
        Action::Redraw
    }

    /// Applies a key press.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        // Terminals that report releases and repeats (kitty's protocol, Windows) would
        // otherwise apply every toggle twice.
        if key.kind == KeyEventKind::Release {
            return Action::Ignore;
        }
        let page = isize::try_from(self.page.max(1)).unwrap_or(isize::MAX);
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
            KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
            KeyCode::Char('l') => self.sort_by(Sort::Live),
            KeyCode::Char('a') => self.sort_by(Sort::Allocs),
            KeyCode::Char('f') => self.sort_by(Sort::Frees),
            KeyCode::Char('g') => self.sort_by(Sort::Growth),
            KeyCode::Char('n') => self.sort_by(Sort::Name),
            KeyCode::Char('c') => self.sort_by(Sort::Cache),
            KeyCode::Char('k') => self.sort_by(Sort::Charged),
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                self.scroll = 0;
                Action::Redraw
            }
            KeyCode::Char('p') => {
                self.group = match self.group {
                    Group::Caches => Group::Owners,
                    Group::Owners => Group::Caches,
                };
                self.scroll = 0;
                Action::Redraw
            }
            KeyCode::Down => self.scroll_by(1),
            KeyCode::Up => self.scroll_by(-1),
            KeyCode::PageDown => self.scroll_by(page),
            KeyCode::PageUp => self.scroll_by(-page),
            KeyCode::Home => self.scroll_by(isize::MIN),
            KeyCode::End => self.scroll_by(isize::MAX),
            _ => Action::Ignore,
        }
    }

    /// Draws the view over the whole frame: a header, the table, the keys.
    pub fn render(&mut self, frame: &mut Frame<'_>) {
        let [header, body, footer] =
            Layout::vertical([Constraint::Length(4), Constraint::Min(1), Constraint::Length(1)])
                .areas(frame.area());
        // The table's own header takes one line of the body.
        self.page = usize::from(body.height.saturating_sub(1)).max(1);
        self.clamp_scroll();
        let width = usize::from(frame.area().width);
        let lines: Vec<Line<'_>> = self.header_lines(width);
        frame.render_widget(Paragraph::new(lines), header);
        let rows = self.rows();
        if self.snapshot.is_none() {
            frame.render_widget(
                Paragraph::new(Line::from("  waiting for the first interval…")),
                body,
            );
        } else if rows.is_empty() {
            frame.render_widget(Paragraph::new(Line::from("  no slab allocations seen yet")), body);
        } else {
            frame.render_widget(self.table(&rows, body), body);
        }
        let footer_line = self.footer_line(rows.len(), width);
        frame.render_widget(Paragraph::new(footer_line), footer);
    }

    fn header_lines(&self, width: usize) -> Vec<Line<'static>> {
        let every = humantime::format_duration(self.refresh);
        let Some(s) = &self.snapshot else {
            return vec![
                Line::from(format!("slabtrace top · every {every}")),
                Line::from(""),
                Line::from(""),
                self.status_line(),
            ];
        };
        let books = s.meminfo.map_or_else(
            || "no /proc/meminfo".to_owned(),
            |m| {
                format!(
                    "Slab {}  SReclaimable {}  SUnreclaim {}",
                    human_bytes(m.slab),
                    human_bytes(m.sreclaimable),
                    human_bytes(m.sunreclaim)
                )
            },
        );
        let first = spread(
            &format!(
                "slabtrace top · node {} · every {every} · interval {} ({:.2}s)",
                s.node, s.seq, s.seconds
            ),
            &books,
            width,
        );
        let sample = if s.sample_rate > 1 {
            format!("sample 1 in {}: frees and live figures estimated", s.sample_rate)
        } else {
            "every object tracked: figures exact".to_owned()
        };
        let group = match self.group {
            Group::Caches => "per pod/cgroup × cache",
            Group::Owners => "per pod/cgroup",
        };
        // A daemon read with `--from` does not report its own RSS: left out, not shown as 0.
        let rss = if s.rss_bytes == 0 {
            String::new()
        } else {
            format!(", RSS {}", human_bytes(s.rss_bytes))
        };
        let second = spread(
            &format!("slabtrace: {} events/s traced{rss} · {sample}", count(s.events_per_second)),
            group,
            width,
        );
        let [first, second] = [first, second].map(|l| printable(&l).into_owned());
        vec![Line::from(first), Line::from(second), Line::from(books_line(s)), self.status_line()]
    }

    /// The last failure, else the last log line, else the session's last warning.
    fn status_line(&self) -> Line<'static> {
        let warning = self.snapshot.as_ref().and_then(|s| s.warnings.last());
        match (&self.error, &self.log, warning) {
            (Some(e), ..) => {
                Line::styled(printable(e).into_owned(), Style::new().add_modifier(Modifier::BOLD))
            }
            (None, Some(l), _) | (None, None, Some(l)) => Line::from(printable(l).into_owned()),
            (None, None, None) => Line::from(""),
        }
    }

    fn footer_line(&self, rows: usize, width: usize) -> Line<'static> {
        let p = match self.group {
            Group::Caches => "p per pod",
            Group::Owners => "p per cache",
        };
        // Quitting first: a narrow terminal cuts the end of the line.
        let keys = format!(
            "q quit  l live  a alloc/s  f free/s  g growth  n name  c cache  k charged  \
             r reverse  {p}  Up/Down PgUp/PgDn scroll"
        );
        let position = if rows == 0 {
            String::new()
        } else {
            let last = (self.scroll + self.page).min(rows);
            format!("rows {}-{last} of {rows}", self.scroll + 1)
        };
        Line::styled(spread(&keys, &position, width), Style::new().add_modifier(Modifier::REVERSED))
    }

    fn table(&self, rows: &[TopRow], area: Rect) -> Table<'static> {
        let columns = self.columns(rows, area.width);
        let marker = if self.sort.descending(self.group) == self.reverse { '▲' } else { '▼' };
        let title = |sort: Sort, name: &str| {
            if sort == self.sort { format!("{name}{marker}") } else { name.to_owned() }
        };
        let cache_title = match self.group {
            Group::Caches => "CACHE",
            Group::Owners => "CACHES",
        };
        let titles = [
            (title(Sort::Name, "POD / CGROUP"), false),
            (title(Sort::Cache, cache_title), false),
            (title(Sort::Live, "LIVE"), true),
            ("OBJS".to_owned(), true),
            (title(Sort::Allocs, "ALLOC/s"), true),
            (title(Sort::Frees, "FREE/s"), true),
            (title(Sort::Growth, "GROWTH/s"), true),
            ("UNACCT".to_owned(), true),
            (title(Sort::Charged, "CHARGED"), true),
        ];
        let header = Row::new(titles.into_iter().map(|(t, right)| cell(t, right)))
            .style(Style::new().add_modifier(Modifier::REVERSED));
        let owner_width = usize::from(columns[0]);
        let cache_width = usize::from(columns[1]);
        let body: Vec<Row<'static>> = rows
            .iter()
            .skip(self.scroll)
            .take(self.page)
            .map(|r| {
                let cache = match self.group {
                    Group::Caches => keep_start(&r.cache, cache_width),
                    Group::Owners => r.caches.to_string(),
                };
                Row::new([
                    cell(keep_end(&r.owner, owner_width), false),
                    cell(cache, self.group == Group::Owners),
                    cell(human_bytes(r.live_bytes), true),
                    cell(objects(r.live_objects), true),
                    cell(count(r.allocs_per_second), true),
                    cell(count(r.frees_per_second), true),
                    cell(signed_bytes(r.growth_per_second), true),
                    cell(human_bytes(r.unaccounted_live_bytes), true),
                    cell(r.charged_bytes.map_or_else(|| "-".to_owned(), human_bytes), true),
                ])
            })
            .collect();
        Table::new(body, columns.map(Constraint::Length)).header(header).column_spacing(1)
    }

    /// Column widths: the figures and the cache name are fixed; the owner column is as wide as
    /// the longest owner (pod names and cgroup paths are the longest and most telling) as long
    /// as the terminal has room, so the figures stay next to the names.
    fn columns(&self, rows: &[TopRow], width: u16) -> [u16; 9] {
        const FIGURES: [u16; 7] = [8, 8, 9, 9, 10, 8, 8];
        const OWNER_AT_LEAST: u16 = 14;
        let cache = if self.group == Group::Owners { 7 } else { 24 };
        let fixed = FIGURES.iter().sum::<u16>() + cache + 8;
        let longest = rows.iter().map(|r| r.owner.chars().count()).max().unwrap_or(0);
        let longest = u16::try_from(longest).unwrap_or(u16::MAX);
        let owner = width.saturating_sub(fixed).min(longest).max(OWNER_AT_LEAST);
        let [live, objs, allocs, frees, growth, unacct, charged] = FIGURES;
        [owner, cache, live, objs, allocs, frees, growth, unacct, charged]
    }
}

/// The memory controller's books in a line: what cgroups are charged against the node's Slab,
/// and the dying cgroups that pin memory no pod is charged for any more.
fn books_line(s: &IntervalView) -> String {
    let charged = s.charged.as_ref().map_or_else(
        || "memcg books: none read (no memory controller)".to_owned(),
        |c| {
            let cgroups = c.cgroups.as_ref();
            match (cgroups.and_then(|g| g.slab), c.node_slab_bytes, c.uncharged_slab_bytes) {
                (Some(slab), Some(node_slab), Some(uncharged)) => format!(
                    "memcg books: cgroups charged slab {} of Slab {}, {} charged to none",
                    human_bytes(slab),
                    human_bytes(node_slab),
                    human_bytes(uncharged)
                ),
                _ => format!(
                    "memcg books: cgroups charged kernel memory {}",
                    cgroups
                        .and_then(crate::cgroup::charged::Charged::kernel_total)
                        .map_or_else(|| "?".to_owned(), human_bytes)
                ),
            }
        },
    );
    let dying = match (s.dying_memcgs, s.percpu_bytes) {
        (Some(n), Some(p)) => format!(" · {n} dying memcgs, Percpu {}", human_bytes(p)),
        (Some(n), None) => format!(" · {n} dying memcgs"),
        (None, _) => String::new(),
    };
    printable(&format!("{charged}{dying}")).into_owned()
}

fn cell(text: String, right: bool) -> Cell<'static> {
    let line = Line::from(Span::raw(text));
    Cell::from(if right { line.right_aligned() } else { line })
}

/// `left`, then `right` against the right edge; `left` is cut short to make room, down to
/// a dozen characters, and past that `right` is left out.
fn spread(left: &str, right: &str, width: usize) -> String {
    const LEFT_AT_LEAST: usize = 12;
    let r = right.chars().count();
    if right.is_empty() || LEFT_AT_LEAST + 2 + r > width {
        return left.to_owned();
    }
    let left = keep_start(left, width - r - 2);
    let l = left.chars().count();
    format!("{left}{}{right}", " ".repeat(width - l - r))
}

/// The end of `s` in `width` characters: a cgroup path's or pod name's end tells it apart.
fn keep_end(s: &str, width: usize) -> String {
    let s = printable(s);
    let n = s.chars().count();
    if n <= width || width == 0 {
        return s.into_owned();
    }
    let tail: String = s.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

/// The start of `s` in `width` characters: cache names differ in their ends less often.
fn keep_start(s: &str, width: usize) -> String {
    let s = printable(s);
    if s.chars().count() <= width || width == 0 {
        return s.into_owned();
    }
    let head: String = s.chars().take(width - 1).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        cgroup::kubepods::Qos,
        frame::{Owner, OwnerRow as FrameRow, OwnerTable, changes},
        output::report::Report,
        pipeline::ProcessUsage,
    };

    fn row(live: u64, size: u64, allocs: u64) -> FrameRow {
        FrameRow {
            object_size: size,
            allocs,
            alloc_bytes: allocs * size,
            frees: allocs - live,
            live_objects: live,
            live_bytes: live * size,
            ..FrameRow::default()
        }
    }

    fn web() -> Owner {
        Owner::Pod {
            namespace: Some("shop".into()),
            name: Some("web-0".into()),
            uid: "u-web".into(),
            qos: Qos::Burstable,
            deleted: false,
        }
    }

    fn svc() -> Owner {
        Owner::Cgroup {
            cgroup_id: 42,
            cgroup: Some("/system.slice/foo.service".into()),
            alive: true,
        }
    }

    fn frame(entries: &[(&Owner, &str, FrameRow)]) -> OwnerTable {
        let mut f = OwnerTable::default();
        for (owner, cache, r) in entries {
            f.owners.insert(owner.key(), (*owner).clone());
            f.rows.insert((owner.key(), (*cache).to_owned()), *r);
        }
        f
    }

    /// Two intervals' frames: web's dentries grew fast, foo's inodes are big but did not move
    /// this interval, web's filp churned (allocated and freed), and an idle row is all freed.
    fn fixture(sample: u64) -> Interval {
        let (web, svc) = (web(), svc());
        let before = frame(&[
            (&web, "dentry", row(1_000, 192, 1_000)),
            (&web, "filp", row(10, 256, 100)),
            (&svc, "shmem_inode_cache", row(50_000, 768, 50_000)),
            (&svc, "kmalloc-64", row(0, 64, 10)),
        ]);
        let now = frame(&[
            (&web, "dentry", row(21_000, 192, 21_000)),
            (&web, "filp", row(10, 256, 4_100)),
            (&svc, "shmem_inode_cache", row(50_000, 768, 50_000)),
            (&svc, "kmalloc-64", row(0, 64, 10)),
        ]);
        let mut report = Report::default();
        report.sampling.rate = sample;
        report.self_stats.warnings.push("no container runtime answered".into());
        Interval {
            seq: 7,
            node: "node-a".into(),
            ts: SystemTime::UNIX_EPOCH,
            seconds: 2.0,
            report,
            changes: changes(&before, &now),
            frame: now,
            meminfo: Some(KernelMemory {
                slab: 1 << 30,
                sreclaimable: 768 << 20,
                sunreclaim: 256 << 20,
                ..KernelMemory::default()
            }),
            process: ProcessUsage { cpu_seconds: 1.0, rss_bytes: 40 << 20 },
            events_per_second: 12_345.0,
            ..Interval::default()
        }
    }

    fn press(view: &mut TopView, code: KeyCode) -> Action {
        view.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn screen(view: &mut TopView, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| view.render(f)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    fn order(view: &TopView) -> Vec<(String, String)> {
        view.rows().into_iter().map(|r| (r.owner, r.cache)).collect()
    }

    fn pair(owner: &str, cache: &str) -> (String, String) {
        (owner.to_owned(), cache.to_owned())
    }

    #[test]
    fn rows_carry_live_figures_and_interval_rates() {
        let s = IntervalView::of(&fixture(16));
        // The all-freed, unchanged kmalloc-64 row is left out.
        assert_eq!(s.rows.len(), 3);
        let dentry = s.rows.iter().find(|r| r.cache == "dentry").unwrap();
        assert_eq!((dentry.owner.as_str(), dentry.live_bytes), ("shop/web-0", 21_000 * 192));
        assert!((dentry.allocs_per_second - 10_000.0).abs() < 1e-9);
        assert!((dentry.growth_per_second - 20_000.0 * 192.0 / 2.0).abs() < 1e-9);
        // Unchanged this interval: 0/s, but its live bytes stand.
        let inodes = s.rows.iter().find(|r| r.cache == "shmem_inode_cache").unwrap();
        assert_eq!(inodes.live_bytes, 50_000 * 768);
        assert!(inodes.allocs_per_second.abs() < 1e-9);
        assert!(inodes.growth_per_second.abs() < 1e-9);
        // Churn: allocated and freed at the same rate, no growth.
        let filp = s.rows.iter().find(|r| r.cache == "filp").unwrap();
        assert!((filp.allocs_per_second - 2_000.0).abs() < 1e-9);
        assert!((filp.frees_per_second - 2_000.0).abs() < 1e-9);
        assert!(filp.growth_per_second.abs() < 1e-9);
    }

    #[test]
    fn hostile_names_reach_the_terminal_escaped() {
        let mut interval = fixture(1);
        let evil = Owner::Cgroup {
            cgroup_id: 66,
            cgroup: Some("/x\x1b]0;owned\x07\nforged".into()),
            alive: true,
        };
        interval.frame.owners.insert(evil.key(), evil.clone());
        interval.frame.rows.insert((evil.key(), "evil\x1b[2J".into()), row(1 << 20, 4096, 1 << 20));
        interval.report.self_stats.warnings.push("warn \x1b[31m\x07".into());
        let mut view = TopView::new(Duration::from_secs(2), Sort::Live);
        view.update(&interval);
        let text = screen(&mut view, 160, 20).join("\n");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("owned\\x07\\x0aforged"), "{text}");
        assert!(text.contains("evil\\x1b[2J"), "{text}");
        assert!(text.contains("warn \\x1b[31m\\x07"), "{text}");
    }

    #[test]
    fn gone_owners_are_marked() {
        let mut interval = fixture(1);
        let key = svc().key();
        interval.frame.owners.insert(
            key,
            Owner::Cgroup {
                cgroup_id: 42,
                cgroup: Some("/system.slice/foo.service".into()),
                alive: false,
            },
        );
        let s = IntervalView::of(&interval);
        assert!(s.rows.iter().any(|r| r.owner == "/system.slice/foo.service (gone)"));
    }

    #[test]
    fn the_view_starts_in_the_order_it_was_given() {
        let mut view = TopView::new(Duration::from_secs(2), Sort::Allocs);
        view.update(&fixture(16));
        assert_eq!(view.sort(), (Sort::Allocs, false));
        let (web, foo) = ("shop/web-0", "/system.slice/foo.service");
        assert_eq!(
            order(&view),
            [pair(web, "dentry"), pair(web, "filp"), pair(foo, "shmem_inode_cache")]
        );
    }

    #[test]
    fn keys_reorder_the_rows() {
        let mut view = TopView::new(Duration::from_secs(2), Sort::Live);
        view.update(&fixture(16));
        let (web, foo) = ("shop/web-0", "/system.slice/foo.service");
        // Live bytes, largest first.
        assert_eq!(
            order(&view),
            [pair(foo, "shmem_inode_cache"), pair(web, "dentry"), pair(web, "filp")]
        );
        assert_eq!(press(&mut view, KeyCode::Char('a')), Action::Redraw);
        assert_eq!(view.sort(), (Sort::Allocs, false));
        assert_eq!(
            order(&view),
            [pair(web, "dentry"), pair(web, "filp"), pair(foo, "shmem_inode_cache")]
        );
        press(&mut view, KeyCode::Char('r'));
        assert_eq!(view.sort(), (Sort::Allocs, true));
        assert_eq!(
            order(&view),
            [pair(foo, "shmem_inode_cache"), pair(web, "filp"), pair(web, "dentry")]
        );
        // A new column starts in its natural direction again.
        press(&mut view, KeyCode::Char('f'));
        assert_eq!(view.sort(), (Sort::Frees, false));
        assert_eq!(order(&view)[0], pair(web, "filp"));
        press(&mut view, KeyCode::Char('g'));
        assert_eq!(order(&view)[0], pair(web, "dentry"));
        // Names alphabetically; ties by live bytes.
        press(&mut view, KeyCode::Char('n'));
        assert_eq!(
            order(&view),
            [pair(foo, "shmem_inode_cache"), pair(web, "dentry"), pair(web, "filp")]
        );
        press(&mut view, KeyCode::Char('c'));
        assert_eq!(
            order(&view),
            [pair(web, "dentry"), pair(web, "filp"), pair(foo, "shmem_inode_cache")]
        );
        press(&mut view, KeyCode::Char('l'));
        assert_eq!(order(&view)[0], pair(foo, "shmem_inode_cache"));
        assert_eq!(press(&mut view, KeyCode::Char('x')), Action::Ignore);
    }

    #[test]
    fn per_owner_totals() {
        let mut view = TopView::new(Duration::from_secs(2), Sort::Live);
        view.update(&fixture(16));
        press(&mut view, KeyCode::Char('p'));
        let rows = view.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].owner, "/system.slice/foo.service");
        let web = &rows[1];
        assert_eq!((web.owner.as_str(), web.caches), ("shop/web-0", 2));
        assert_eq!(web.live_bytes, 21_000 * 192 + 10 * 256);
        assert!((web.allocs_per_second - 12_000.0).abs() < 1e-9);
        press(&mut view, KeyCode::Char('a'));
        assert_eq!(view.rows()[0].owner, "shop/web-0");
        // In per-owner rows, `c` orders by how many caches, most first.
        press(&mut view, KeyCode::Char('c'));
        assert_eq!(view.rows()[0].owner, "shop/web-0");
        let text = screen(&mut view, 140, 12).join("\n");
        assert!(text.contains("CACHES▼"), "{text}");
        assert!(text.contains("per pod/cgroup"), "{text}");
        assert!(text.contains("p per cache"), "{text}");
        press(&mut view, KeyCode::Char('p'));
        assert_eq!(view.rows().len(), 3);
    }

    #[test]
    fn quit_keys() {
        let mut view = TopView::new(Duration::from_secs(2), Sort::Live);
        assert_eq!(press(&mut view, KeyCode::Char('q')), Action::Quit);
        assert_eq!(press(&mut view, KeyCode::Esc), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(view.key(ctrl_c), Action::Quit);
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(view.key(release), Action::Ignore);
    }

    #[test]
    fn the_screen_before_the_first_interval() {
        let mut view = TopView::new(Duration::from_secs(2), Sort::Live);
        let lines = screen(&mut view, 100, 8);
        assert!(lines[0].starts_with("slabtrace top · every 2s"), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("waiting for the first interval…")), "{lines:#?}");
        assert!(lines[7].starts_with("q quit  l live  a alloc/s"), "{lines:#?}");
    }

    #[test]
    fn the_screen_shows_the_books_and_the_rows() {
        let mut view = TopView::new(Duration::from_secs(2), Sort::Live);
        view.update(&fixture(16));
        let lines = screen(&mut view, 140, 10);
        let text = lines.join("\n");
        assert!(
            lines[0].starts_with("slabtrace top · node node-a · every 2s · interval 7 (2.00s)")
        );
        assert!(lines[0].ends_with("Slab 1.00G  SReclaimable 768M  SUnreclaim 256M"), "{text}");
        assert!(lines[1].contains("12.3k events/s traced, RSS 40.0M"), "{text}");
        assert!(lines[1].contains("sample 1 in 16: frees and live figures estimated"), "{text}");
        assert_eq!(lines[2], "memcg books: none read (no memory controller)");
        assert_eq!(lines[3], "no container runtime answered");
        let header = &lines[4];
        // The owner column is as wide as the longest owner, not the whole terminal.
        assert_eq!(header.find("CACHE"), Some("/system.slice/foo.service".len() + 1), "{header}");
        for column in ["POD / CGROUP", "CACHE", "LIVE▼", "OBJS", "ALLOC/s", "FREE/s", "GROWTH/s"]
        {
            assert!(header.contains(column), "{column} missing: {header}");
        }
        let first: Vec<&str> = lines[5].split_whitespace().collect();
        assert_eq!(
            first,
            [
                "/system.slice/foo.service",
                "shmem_inode_cache",
                "36.6M",
                "50.0k",
                "0",
                "0",
                "0",
                "0B",
                "-"
            ]
        );
        let second: Vec<&str> = lines[6].split_whitespace().collect();
        assert_eq!(
            second,
            ["shop/web-0", "dentry", "3.85M", "21.0k", "10.0k", "0", "+1.83M", "0B", "-"]
        );
        assert!(lines[9].contains("q quit") && lines[9].ends_with("rows 1-3 of 3"), "{text}");

        press(&mut view, KeyCode::Char('a'));
        let lines = screen(&mut view, 140, 10);
        assert!(lines[4].contains("ALLOC/s▼") && !lines[4].contains("LIVE▼"), "{lines:#?}");
        assert!(lines[5].starts_with("shop/web-0") && lines[5].contains("dentry"));
        press(&mut view, KeyCode::Char('r'));
        let lines = screen(&mut view, 140, 10);
        assert!(lines[4].contains("ALLOC/s▲"), "{lines:#?}");
    }

    #[test]
    fn exact_figures_say_so_and_failures_show() {
        let mut view = TopView::new(Duration::from_secs(1), Sort::Live);
        view.update(&fixture(1));
        view.log("warn: something".into());
        let lines = screen(&mut view, 140, 10);
        assert!(lines[1].contains("every object tracked: figures exact"), "{lines:#?}");
        assert_eq!(lines[3], "warn: something");
        view.failed("skipping an interval: the map is gone".into());
        assert_eq!(screen(&mut view, 140, 10)[3], "skipping an interval: the map is gone");
        // A good interval clears the failure.
        view.update(&fixture(1));
        assert_eq!(screen(&mut view, 140, 10)[3], "warn: something");
    }

    #[test]
    fn long_names_keep_their_end() {
        let mut interval = fixture(1);
        let long = format!("/kubepods.slice/{}/cri-containerd-abc.scope", "x".repeat(200));
        interval
            .frame
            .owners
            .insert(svc().key(), Owner::Cgroup { cgroup_id: 42, cgroup: Some(long), alive: true });
        let mut view = TopView::new(Duration::from_secs(1), Sort::Live);
        view.update(&interval);
        let lines = screen(&mut view, 120, 10);
        assert!(lines[5].starts_with('…'), "{lines:#?}");
        assert!(lines[5].contains("cri-containerd-abc.scope shmem_inode_cache"), "{lines:#?}");
    }

    #[test]
    fn scrolling_stays_within_the_rows() {
        let owners: Vec<Owner> = (0..30)
            .map(|i| Owner::Cgroup {
                cgroup_id: i,
                cgroup: Some(format!("/cg{i:02}")),
                alive: true,
            })
            .collect();
        let entries: Vec<(&Owner, &str, FrameRow)> =
            owners.iter().zip(1..).map(|(o, i)| (o, "dentry", row(i * 10, 192, i * 10))).collect();
        let mut interval = fixture(1);
        interval.frame = frame(&entries);
        interval.changes = Vec::new();
        let mut view = TopView::new(Duration::from_secs(1), Sort::Live);
        view.update(&interval);
        // 13 lines: 4 of header, 1 of footer, 1 of column titles: 7 rows a page.
        let lines = screen(&mut view, 100, 13);
        assert!(lines[5].starts_with("/cg29"), "{lines:#?}");
        assert!(lines[12].ends_with("rows 1-7 of 30"));
        press(&mut view, KeyCode::Down);
        assert!(screen(&mut view, 100, 13)[5].starts_with("/cg28"));
        press(&mut view, KeyCode::PageDown);
        let lines = screen(&mut view, 100, 13);
        assert!(lines[5].starts_with("/cg21"), "{lines:#?}");
        assert!(lines[12].ends_with("rows 9-15 of 30"));
        press(&mut view, KeyCode::End);
        let lines = screen(&mut view, 100, 13);
        assert!(lines[11].starts_with("/cg00") && lines[12].ends_with("rows 24-30 of 30"));
        press(&mut view, KeyCode::PageDown);
        assert!(screen(&mut view, 100, 13)[12].ends_with("rows 24-30 of 30"));
        press(&mut view, KeyCode::Up);
        press(&mut view, KeyCode::PageUp);
        assert!(screen(&mut view, 100, 13)[12].ends_with("rows 16-22 of 30"));
        press(&mut view, KeyCode::Home);
        assert!(screen(&mut view, 100, 13)[5].starts_with("/cg29"));
        // A new order starts at the top.
        press(&mut view, KeyCode::End);
        press(&mut view, KeyCode::Char('n'));
        assert!(screen(&mut view, 100, 13)[5].starts_with("/cg00"));
    }

    #[test]
    fn the_memory_controllers_books_show_for_the_node_and_each_pod() {
        use crate::cgroup::{
            charged::{Charged, NodeCharged, Source},
            dying::DyingCgroups,
        };
        let mut interval = fixture(1);
        // web-0 is traced and has books; another pod has only books (all its objects are
        // from before tracing).
        let web_books = crate::rollup::PodUsage {
            uid: "u-web".into(),
            ..crate::testutil::charged_pod(3 << 20)
        };
        interval.report.pods = vec![web_books, crate::testutil::charged_pod(900 << 20)];
        interval.report.observation.charged = Some(NodeCharged {
            source: Some(Source::CgroupV2),
            node_slab_bytes: Some(5 << 30),
            cgroups: Some(Charged { slab: Some(3 << 30), ..Charged::unknown(Source::CgroupV2) }),
            uncharged_slab_bytes: Some(2 << 30),
            files_read: 3,
            skipped: 0,
        });
        interval.report.observation.dying_cgroups = Some(DyingCgroups {
            memcg_nr_dying: Some(1200),
            percpu_bytes: Some(150 << 20),
            ..DyingCgroups::default()
        });
        let mut view = TopView::new(Duration::from_secs(1), Sort::Live);
        view.update(&interval);
        let lines = screen(&mut view, 140, 12);
        assert_eq!(
            lines[2],
            "memcg books: cgroups charged slab 3.00G of Slab 5.00G, 2.00G charged to none · \
             1200 dying memcgs, Percpu 150M",
            "{lines:#?}"
        );
        // Per cache: the pod only the books know has no cache to show; web-0's rows carry its
        // books.
        let rows = view.rows();
        assert_eq!(rows.len(), 3, "{rows:#?}");
        let web: Vec<&TopRow> = rows.iter().filter(|r| r.owner == "shop/web-0").collect();
        assert!(web.iter().all(|r| r.charged_bytes == Some((3 << 20) + 1)), "{web:#?}");
        assert!(
            rows.iter().all(|r| r.owner_key != OwnerKey::Cgroup(42) || r.charged_bytes.is_none())
        );
        // Per pod, sorted by what is charged: the untraced pod first.
        press(&mut view, KeyCode::Char('p'));
        press(&mut view, KeyCode::Char('k'));
        let rows = view.rows();
        assert_eq!(rows[0].owner, format!("ns/p-{}", 900 << 20), "{rows:#?}");
        assert_eq!((rows[0].charged_bytes, rows[0].live_bytes), (Some((900 << 20) + 1), 0));
        assert_eq!(rows[1].owner, "shop/web-0");
        let lines = screen(&mut view, 140, 12);
        assert!(lines[4].contains("CHARGED▼"), "{lines:#?}");
        assert!(lines[5].trim_end().ends_with("900M"), "{lines:#?}");
        assert!(lines[7].trim_end().ends_with('-'), "the cgroup has no books: {lines:#?}");
    }

    #[test]
    fn names_fit_their_columns() {
        assert_eq!(keep_end("/a/b/c", 10), "/a/b/c");
        assert_eq!(keep_end("/abcdefgh", 5), "…efgh");
        assert_eq!(keep_start("kmalloc-cg-128", 8), "kmalloc…");
        assert_eq!(spread("left", "right", 20), "left           right");
        assert_eq!(spread("a longer left side", "right", 20), "a longer lef…  right");
        assert_eq!(spread("left", "right", 18), "left");
    }
}
