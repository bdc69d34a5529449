//! What a VM said, and the table of every kernel's run.
//!
//! The guest's init (`tests/src/bin/vm-init.rs`) prints `SLABTRACE-VM <verb> …` lines among the
//! kernel's and the tests' output on the serial console; [`Event::parse`] reads them, wherever
//! they start on a line (a kernel message may have been printed just before, without a
//! newline). [`Run`] keeps what one kernel's boot produced; [`table`] is the summary.

use std::{fmt::Write as _, time::Duration};

/// A line the guest's init printed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The kernel booted and init runs: the kernel's release.
    Booted(String),
    /// A test started.
    Start { group: String, test: String },
    /// A test ended.
    Result { group: String, test: String, outcome: Outcome },
    /// Something worth a look that does not stop the run.
    Warning(String),
    /// init could not go on (a mount failed, no plan): nothing more runs.
    Error(String),
    /// Every test ran.
    Done,
}

/// How a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    /// Killed by the guest's per-test timeout.
    Timeout,
}

const MARK: &str = "SLABTRACE-VM ";

impl Event {
    /// The event on a console line, if it has one.
    pub fn parse(line: &str) -> Option<Self> {
        let at = line.find(MARK)?;
        let rest = line[at + MARK.len()..].trim_end();
        let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let words: Vec<&str> = args.split_whitespace().collect();
        Some(match (verb, words.as_slice()) {
            ("booted", [release]) => Self::Booted((*release).to_owned()),
            ("start", [group, test]) => {
                Self::Start { group: (*group).to_owned(), test: (*test).to_owned() }
            }
            ("result", [group, test, outcome, ..]) => Self::Result {
                group: (*group).to_owned(),
                test: (*test).to_owned(),
                outcome: match *outcome {
                    "ok" => Outcome::Ok,
                    "TIMEOUT" => Outcome::Timeout,
                    _ => Outcome::Failed,
                },
            },
            ("warning", _) => Self::Warning(args.to_owned()),
            ("error", _) => Self::Error(args.to_owned()),
            ("done", _) => Self::Done,
            _ => return None,
        })
    }
}

/// One kernel's boot and what came of it.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The matrix's name (`6.1`).
    pub kernel: String,
    /// The concrete package and its version.
    pub package: String,
    pub version: String,
    /// The release the guest reported, once it booted.
    pub release: Option<String>,
    /// Every test planned, `group::test`.
    pub planned: Vec<String>,
    /// Every test's outcome, in order.
    pub results: Vec<(String, Outcome)>,
    /// Why the run ended early (qemu killed, init's error), if it did.
    pub problem: Option<String>,
    /// The kernel's own complaints on the console (`WARNING:`, `BUG:`): a test can pass while
    /// slabtrace makes the kernel warn, and that must not look green.
    pub kernel_complaints: Vec<String>,
    pub wall: Duration,
}

impl Run {
    /// Takes a console line that is not an event in: keeps the kernel's warnings.
    pub fn console(&mut self, line: &str) {
        if is_kernel_complaint(line) && self.kernel_complaints.len() < 20 {
            self.kernel_complaints.push(line.trim().to_owned());
        }
    }

    /// Takes an event in.
    pub fn record(&mut self, event: &Event) {
        match event {
            Event::Booted(release) => self.release = Some(release.clone()),
            Event::Result { group, test, outcome } => {
                self.results.push((format!("{group}::{test}"), *outcome));
            }
            Event::Error(text) => self.problem = Some(format!("the guest's init failed: {text}")),
            Event::Start { .. } | Event::Warning(_) | Event::Done => {}
        }
    }

    pub fn passed(&self) -> usize {
        self.results.iter().filter(|(_, o)| *o == Outcome::Ok).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Planned tests with no result: the VM died, hung or never booted.
    pub fn not_run(&self) -> Vec<&str> {
        self.planned
            .iter()
            .filter(|p| !self.results.iter().any(|(r, _)| r == *p))
            .map(String::as_str)
            .collect()
    }

    /// Whether everything planned ran and passed.
    pub fn green(&self) -> bool {
        self.release.is_some()
            && self.failed() == 0
            && self.not_run().is_empty()
            && self.kernel_complaints.is_empty()
    }
}

/// A console line in which the kernel reports a warning or a bug of its own (a `WARN()`, a soft
/// lockup, an RCU stall).
#[must_use]
pub fn is_kernel_complaint(line: &str) -> bool {
    ["] WARNING: CPU:", "] BUG: ", "] watchdog: BUG:", "rcu_sched self-detected stall", "] Oops"]
        .iter()
        .any(|needle| line.contains(needle))
}

/// The summary: a row per kernel, then what failed where.
pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 8]> = runs
        .iter()
        .map(|r| {
            [
                r.kernel.clone(),
                r.package.clone(),
                r.version.clone(),
                if r.release.is_some() { "yes" } else { "no" }.to_owned(),
                r.passed().to_string(),
                r.failed().to_string(),
                r.not_run().len().to_string(),
                format_duration(r.wall),
            ]
        })
        .collect();
    let header = ["KERNEL", "PACKAGE", "VERSION", "BOOTED", "PASSED", "FAILED", "NOT RUN", "TIME"];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let cells: Vec<String> =
            row.iter()
                .zip(&widths)
                .enumerate()
                // Text left, numbers right.
                .map(|(i, (cell, w))| {
                    if (4..7).contains(&i) { format!("{cell:>w$}") } else { format!("{cell:<w$}") }
                })
                .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    for r in runs {
        for complaint in &r.kernel_complaints {
            let _ = writeln!(out, "{}: the kernel complained: {complaint}", r.kernel);
        }
        if let Some(problem) = &r.problem {
            let _ = writeln!(out, "{}: {problem}", r.kernel);
        }
        for (test, outcome) in r.results.iter().filter(|(_, o)| *o != Outcome::Ok) {
            let what = if *outcome == Outcome::Timeout { "TIMEOUT" } else { "FAILED" };
            let _ = writeln!(out, "{}: {what} {test}", r.kernel);
        }
        let not_run = r.not_run();
        if !not_run.is_empty() {
            let _ = writeln!(out, "{}: not run: {}", r.kernel, not_run.join(", "));
        }
    }
    out
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 { format!("{}m{:02}s", secs / 60, secs % 60) } else { format!("{secs}s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_s_warnings_and_lockups_turn_a_run_red() {
        let mut run = Run {
            release: Some("5.10".into()),
            planned: vec!["a::b".into()],
            results: vec![("a::b".into(), Outcome::Ok)],
            ..Run::default()
        };
        run.console("[   12.8] EXT4-fs (nvme0n1): mounted filesystem");
        assert!(run.green());
        for line in [
            "[   12.896385] WARNING: CPU: 0 PID: 86 at kernel/bpf/verifier.c:10519 bpf_check",
            "[  112.461617] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [slabtrace:148]",
        ] {
            assert!(is_kernel_complaint(line), "{line}");
            run.console(line);
        }
        assert!(!run.green());
        assert!(table(&[run]).contains("the kernel complained: [  112.461617] watchdog"));
    }

    #[test]
    fn guest_lines_parse_wherever_they_start() {
        assert_eq!(
            Event::parse("SLABTRACE-VM booted 6.1.0-50-cloud-amd64\r"),
            Some(Event::Booted("6.1.0-50-cloud-amd64".into()))
        );
        assert_eq!(
            Event::parse(
                "[    3.1] random: crng initSLABTRACE-VM result oom a_memcg_oom FAILED 12.5"
            ),
            Some(Event::Result {
                group: "oom".into(),
                test: "a_memcg_oom".into(),
                outcome: Outcome::Failed
            })
        );
        assert_eq!(
            Event::parse("SLABTRACE-VM result errors x ok 0.4"),
            Some(Event::Result { group: "errors".into(), test: "x".into(), outcome: Outcome::Ok })
        );
        assert_eq!(
            Event::parse("SLABTRACE-VM result daemon y TIMEOUT 600.0").map(|e| match e {
                Event::Result { outcome, .. } => outcome,
                _ => Outcome::Ok,
            }),
            Some(Outcome::Timeout)
        );
        assert_eq!(
            Event::parse("SLABTRACE-VM start attribution frees_are_credited"),
            Some(Event::Start { group: "attribution".into(), test: "frees_are_credited".into() })
        );
        assert_eq!(
            Event::parse("SLABTRACE-VM warning no scratch disk: /tmp is a tmpfs"),
            Some(Event::Warning("no scratch disk: /tmp is a tmpfs".into()))
        );
        assert_eq!(Event::parse("SLABTRACE-VM done 3 passed, 0 failed"), Some(Event::Done));
        assert_eq!(Event::parse("test result: ok. 1 passed"), None);
        assert_eq!(Event::parse("SLABTRACE-VM result too few"), None);
        assert_eq!(Event::parse("SLABTRACE-VM reboot"), None);
    }

    fn run() -> Run {
        let mut r = Run {
            kernel: "6.1".into(),
            package: "linux-image-6.1.0-50-cloud-amd64".into(),
            version: "6.1.176-1".into(),
            planned: vec!["a::x".into(), "a::y".into(), "b::z".into()],
            wall: Duration::from_secs(125),
            ..Run::default()
        };
        for line in [
            "SLABTRACE-VM booted 6.1.0-50-cloud-amd64",
            "SLABTRACE-VM result a x ok 1.0",
            "SLABTRACE-VM result a y FAILED 2.0",
        ] {
            r.record(&Event::parse(line).unwrap());
        }
        r
    }

    #[test]
    fn a_run_counts_passes_failures_and_what_never_ran() {
        let r = run();
        assert_eq!((r.passed(), r.failed(), r.not_run()), (1, 1, vec!["b::z"]));
        assert!(!r.green());
        let mut all = run();
        all.results = vec![
            ("a::x".into(), Outcome::Ok),
            ("a::y".into(), Outcome::Ok),
            ("b::z".into(), Outcome::Ok),
        ];
        assert!(all.green());
        let never = Run { planned: vec![], ..Run::default() };
        assert!(!never.green(), "a kernel that did not boot is not green");
    }

    #[test]
    fn the_table_has_a_row_per_kernel_and_names_failures() {
        let mut dead =
            Run { kernel: "5.10".into(), planned: vec!["a::x".into()], ..Run::default() };
        dead.problem = Some("qemu killed: no boot within 180 s".into());
        let text = table(&[dead, run()]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("KERNEL  PACKAGE"), "{text}");
        assert!(lines[1].starts_with("5.10 ") && lines[1].contains(" no "), "{text}");
        assert!(lines[2].contains("linux-image-6.1.0-50-cloud-amd64  6.1.176-1  yes"), "{text}");
        assert!(lines[2].ends_with("2m05s"), "{text}");
        assert!(text.contains("5.10: qemu killed: no boot within 180 s"), "{text}");
        assert!(text.contains("6.1: FAILED a::y"), "{text}");
        assert!(text.contains("6.1: not run: b::z"), "{text}");
    }
}
