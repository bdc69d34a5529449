//! Workloads with known slab footprints, for the integration tests and the bench.
//!
//! ```text
//! slab-workload create DIR N [NAME_LEN]   create N empty files (dentry + inode each)
//! slab-workload unlink DIR START COUNT    unlink files START..START+COUNT
//! slab-workload churn DIR N               create and unlink N files, one at a time
//! slab-workload stat-missing DIR N        stat N names that do not exist (negative dentries)
//! slab-workload eventfd N HOLD_MS         open N eventfds, hold them, close them
//! slab-workload reopen N                  open and close /dev/null N times, one at a time
//! slab-workload tcp-connect N             N loopback TCP connections, accepted and closed
//! slab-workload hog MB                    touch MB MiB of anonymous memory, then exit
//! slab-workload write FILE BYTES          write BYTES to FILE (page cache charged to the writer)
//! slab-workload create-moving DIR N ROUNDS PROCS...
//!                                         ROUNDS times: move into the next cgroup (write
//!                                         its pid to the next cgroup.procs, in turn), then
//!                                         create N files there
//! ```
//! A loopback TCP handshake is processed in the network receive softirq: the request socket
//! and the accepted child socket are allocated in interrupt context, not by the connecting
//! task.
//! File names are `f<index>` padded with `x` to `NAME_LEN` (default: no padding); names longer
//! than the dentry's inline space (about 40 bytes) get a kmalloc'd external name.
//! `hog` writes every page it allocates, so each one is really charged: in a memory cgroup with
//! a lower limit it is OOM-killed (and exits 0 only if nothing stopped it).

use std::{fs, io, path::Path, process::ExitCode, thread, time::Duration};

fn name(i: u64, len: usize) -> String {
    let mut n = format!("f{i}");
    while n.len() < len {
        n.push('x');
    }
    n
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("{what} is not a number"))
}

/// `write FILE BYTES`: page cache charged to the writer's memcg, kept until the file goes.
fn write(args: &[String]) -> Result<(), String> {
    let file = Path::new(args.get(1).ok_or("missing FILE")?);
    let bytes: usize = arg(args, 2, "BYTES")?;
    fs::write(file, vec![0x5a_u8; bytes]).map_err(|e| e.to_string())
}

#[expect(clippy::too_many_lines, reason = "one arm per workload: the dispatch reads as the usage")]
fn run(args: &[String]) -> Result<(), String> {
    let io = |e: io::Error| e.to_string();
    match args.first().map(String::as_str) {
        Some("create") => {
            let dir = Path::new(args.get(1).ok_or("missing DIR")?);
            let n: u64 = arg(args, 2, "N")?;
            let len: usize = if args.len() > 3 { arg(args, 3, "NAME_LEN")? } else { 0 };
            for i in 0..n {
                fs::File::create(dir.join(name(i, len))).map_err(io)?;
            }
        }
        Some("write") => write(args)?,
        Some("create-moving") => {
            let dir = Path::new(args.get(1).ok_or("missing DIR")?);
            let n: u64 = arg(args, 2, "N")?;
            let rounds: u64 = arg(args, 3, "ROUNDS")?;
            let procs = &args[4.min(args.len())..];
            if procs.is_empty() {
                return Err("missing PROCS".into());
            }
            let pid = std::process::id().to_string();
            let mut next = 0;
            for procs_file in
                procs.iter().cycle().take(usize::try_from(rounds).map_err(|e| e.to_string())?)
            {
                fs::write(procs_file, &pid).map_err(io)?;
                for _ in 0..n {
                    fs::File::create(dir.join(name(next, 0))).map_err(io)?;
                    next += 1;
                }
            }
        }
        Some("unlink") => {
            let dir = Path::new(args.get(1).ok_or("missing DIR")?);
            let start: u64 = arg(args, 2, "START")?;
            let count: u64 = arg(args, 3, "COUNT")?;
            let len: usize = if args.len() > 4 { arg(args, 4, "NAME_LEN")? } else { 0 };
            for i in start..start + count {
                fs::remove_file(dir.join(name(i, len))).map_err(io)?;
            }
        }
        Some("churn") => {
            let dir = Path::new(args.get(1).ok_or("missing DIR")?);
            let n: u64 = arg(args, 2, "N")?;
            for i in 0..n {
                let p = dir.join(name(i, 0));
                fs::File::create(&p).map_err(io)?;
                fs::remove_file(&p).map_err(io)?;
            }
        }
        Some("stat-missing") => {
            let dir = Path::new(args.get(1).ok_or("missing DIR")?);
            let n: u64 = arg(args, 2, "N")?;
            for i in 0..n {
                let _ = fs::metadata(dir.join(format!("missing{i}")));
            }
        }
        Some("eventfd") => {
            let n: u64 = arg(args, 1, "N")?;
            let hold: u64 = arg(args, 2, "HOLD_MS")?;
            let mut fds = Vec::new();
            for _ in 0..n {
                // SAFETY: eventfd with valid flags; the fd is closed below.
                let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error().to_string());
                }
                fds.push(fd);
            }
            thread::sleep(Duration::from_millis(hold));
            for fd in fds {
                // SAFETY: closing an fd this process opened.
                unsafe { libc::close(fd) };
            }
        }
        Some("reopen") => {
            // One `struct file` at a time: the allocator hands back the few it just freed,
            // so a handful of addresses carry every allocation.
            let n: u64 = arg(args, 1, "N")?;
            for _ in 0..n {
                drop(fs::File::open("/dev/null").map_err(io)?);
            }
        }
        Some("tcp-connect") => {
            let n: u64 = arg(args, 1, "N")?;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
            let addr = listener.local_addr().map_err(io)?;
            for _ in 0..n {
                let client = std::net::TcpStream::connect(addr).map_err(io)?;
                let (server, _) = listener.accept().map_err(io)?;
                drop(client);
                drop(server);
            }
        }
        Some("hog") => {
            let mb: usize = arg(args, 1, "MB")?;
            hog(mb);
        }
        _ => {
            return Err(
                "usage: slab-workload create|unlink|churn|stat-missing|eventfd|reopen|tcp-connect|hog|write …"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Allocates `mb` MiB a MiB at a time, writing every byte of it, and keeps it all.
fn hog(mb: usize) {
    const MIB: usize = 1 << 20;
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(mb);
    for _ in 0..mb {
        // Filled with ones, not zeros: calloc'd zero pages would be mapped but never touched.
        kept.push(std::hint::black_box(vec![1u8; MIB]));
    }
    std::hint::black_box(&kept);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slab-workload: {e}");
            ExitCode::FAILURE
        }
    }
}
