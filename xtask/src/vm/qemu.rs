//! Boots one kernel under qemu and follows its serial console.
//!
//! TCG by default (`-accel tcg,thread=single -cpu max`): nested KVM hangs on the machines this project runs
//! on, and TCG boots a cloud kernel in seconds; `--kvm` where it works. No network device, no
//! display, no default devices: the console on the serial port, read through qemu's stdout,
//! saved to `target/vm/<kernel>.log` and printed with the kernel's name in front. The scratch
//! disk is `NVMe`, which Debian's cloud kernels build in (virtio-blk is a module there).
//!
//! xtask never trusts the guest to end: the kernel must boot within [`BOOT_TIMEOUT`], and after
//! that the guest must report progress (a test started or ended) at least every test timeout
//! plus [`GRACE`]; otherwise qemu is killed and the run says so.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::report::{Event, Run};

/// From qemu's start to init's first line, under TCG on a loaded two-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_mins(3);
/// On top of the guest's own per-test timeout, before xtask gives up on the guest.
pub const GRACE: Duration = Duration::from_mins(1);

/// How to boot.
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// A raw ext4 image for the guest's /tmp.
    pub disk: Option<&'a Path>,
    pub memory_mib: u64,
    pub kvm: bool,
    /// The guest's per-test timeout.
    pub test_timeout: Duration,
    /// Where the console goes.
    pub log: &'a Path,
    /// Whether the console is also printed, each line prefixed with the kernel's name; when
    /// not, only the tests' results are (the root suite prints beside it).
    pub stream: bool,
}

/// The kernel command line: the console on the serial port; a panic ends the VM at once
/// (`panic=-1` reboots, `-no-reboot` makes that an exit); cgroup2 only, as on a Kubernetes
/// 1.25+ node; kernel messages down to warnings (`loglevel=5`), so that a `WARN()` or a soft
/// lockup slabtrace causes is seen and fails the run, and little else; no speculation
/// mitigations, which cost much under TCG and test nothing here; RDRAND (`-cpu max` has it)
/// seeds the RNG, so nothing waits for entropy.
pub const APPEND: &str = "console=ttyS0 panic=-1 cgroup_no_v1=all loglevel=5 mitigations=off \
                          random.trust_cpu=on rdinit=/init";

/// qemu's arguments for `boot`.
pub fn args(boot: &Boot) -> Vec<String> {
    let mut args: Vec<String> = if boot.kvm {
        ["-accel", "kvm", "-cpu", "host"].map(str::to_owned).to_vec()
    } else {
        // One host thread runs both vCPUs in turn. With a thread per vCPU (qemu's default),
        // 6.12 now and then executed a stale int3 from the kernel's own text patching (a
        // tracepoint's static key being switched on) after the patching had finished, and
        // oopsed in kmem_cache_alloc (1 test in 22 that attach programs; with one thread,
        // none in a whole matrix of 99): an emulator race, not slabtrace's. One thread costs
        // little here, where the host's cores are shared by several VMs anyway.
        ["-accel", "tcg,thread=single", "-cpu", "max"].map(str::to_owned).to_vec()
    };
    args.extend(
        [
            "-smp",
            "2",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
        ]
        .map(str::to_owned),
    );
    args.extend(["-m".to_owned(), boot.memory_mib.to_string()]);
    args.extend(["-kernel".to_owned(), boot.vmlinuz.display().to_string()]);
    args.extend(["-initrd".to_owned(), boot.initrd.display().to_string()]);
    args.extend(["-append".to_owned(), APPEND.to_owned()]);
    if let Some(disk) = boot.disk {
        args.extend([
            "-drive".to_owned(),
            // cache=unsafe: a scratch disk thrown away after the boot; no flush is worth a wait.
            format!("file={},if=none,format=raw,id=scratch,cache=unsafe", disk.display()),
            "-device".to_owned(),
            "nvme,drive=scratch,serial=slabtrace-scratch".to_owned(),
        ]);
    }
    args
}

/// What a line of qemu's output is to the reader.
enum Line {
    Console(String),
    Qemu(String),
}

/// Boots, streams the console with `prefix`, records events into `run`; returns when qemu
/// exits or is killed (the reason then in `run.problem`).
pub fn boot(boot: &Boot, prefix: &str, run: &mut Run) -> Result<()> {
    let started = Instant::now();
    let mut log =
        fs::File::create(boot.log).with_context(|| format!("creating {}", boot.log.display()))?;
    let mut child = Command::new("qemu-system-x86_64")
        .args(args(boot))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("no stdout from qemu")?;
    let stderr = child.stderr.take().context("no stderr from qemu")?;
    let tx_err = tx.clone();
    let readers = [
        thread::spawn(move || forward(stdout, &tx, Line::Console)),
        thread::spawn(move || forward(stderr, &tx_err, Line::Qemu)),
    ];

    let mut deadline = started + BOOT_TIMEOUT;
    let mut done = false;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Line::Console(line)) => {
                let _ = writeln!(log, "{line}");
                let event = Event::parse(&line);
                if boot.stream || matches!(event, Some(Event::Result { .. })) {
                    println!("[{prefix}] {line}");
                }
                if event.is_none() {
                    run.console(&line);
                }
                if let Some(event) = event {
                    run.record(&event);
                    match event {
                        Event::Booted(_) | Event::Start { .. } | Event::Result { .. } => {
                            deadline = Instant::now() + boot.test_timeout + GRACE;
                        }
                        // The guest powers off now; if qemu lingers, it is not for long.
                        Event::Done | Event::Error(_) => {
                            done = true;
                            deadline = Instant::now() + GRACE;
                        }
                        Event::Warning(_) => {}
                    }
                }
            }
            Ok(Line::Qemu(line)) => {
                let _ = writeln!(log, "qemu: {line}");
                eprintln!("[{prefix}] qemu: {line}");
            }
            // Both readers ended: qemu closed its output, so it exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                if !done {
                    run.problem = Some(if run.release.is_none() {
                        format!(
                            "qemu killed: the kernel did not boot within {}s",
                            BOOT_TIMEOUT.as_secs()
                        )
                    } else {
                        format!(
                            "qemu killed: the guest reported no progress for {}s",
                            (boot.test_timeout + GRACE).as_secs()
                        )
                    });
                }
                break;
            }
        }
    }
    let status = child.wait()?;
    for reader in readers {
        let _ = reader.join();
    }
    if run.problem.is_none() && !done {
        run.problem = Some(if run.release.is_none() {
            format!("qemu exited ({status}) before the kernel booted: see {}", boot.log.display())
        } else {
            format!("the VM ended ({status}) before its tests did: see {}", boot.log.display())
        });
    }
    run.wall = started.elapsed();
    Ok(())
}

/// Sends each line of `from` (lossily decoded: a console carries any bytes) until it ends.
fn forward(from: impl std::io::Read, to: &mpsc::Sender<Line>, wrap: fn(String) -> Line) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                if to.send(wrap(line)).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_by_default_kvm_on_request_and_the_disk_on_nvme() {
        let boot = Boot {
            vmlinuz: Path::new("/k/vmlinuz"),
            initrd: Path::new("/k/initrd"),
            disk: Some(Path::new("/k/disk.img")),
            memory_mib: 2048,
            kvm: false,
            test_timeout: Duration::from_secs(1),
            log: Path::new("/k/log"),
            stream: true,
        };
        let a = args(&boot).join(" ");
        assert!(a.starts_with("-accel tcg,thread=single -cpu max -smp 2"), "{a}");
        for want in [
            "-no-reboot",
            "-m 2048",
            "-kernel /k/vmlinuz",
            "-initrd /k/initrd",
            "-serial stdio",
            "-drive file=/k/disk.img,if=none,format=raw,id=scratch,cache=unsafe",
            "-device nvme,drive=scratch",
        ] {
            assert!(a.contains(want), "{want} missing: {a}");
        }
        let append = args(&boot).into_iter().skip_while(|a| a != "-append").nth(1).unwrap();
        for want in ["console=ttyS0", "panic=-1", "cgroup_no_v1=all"] {
            assert!(append.split(' ').any(|w| w == want), "{want} missing: {append}");
        }
        let kvm = args(&Boot { kvm: true, disk: None, ..boot }).join(" ");
        assert!(kvm.starts_with("-accel kvm -cpu host") && !kvm.contains("nvme"), "{kvm}");
    }
}
