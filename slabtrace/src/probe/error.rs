//! The errors loading and attaching can end in, each a sentence a user can act on.

use std::{io, path::PathBuf};

use aya::{EbpfError, maps::MapError, programs::ProgramError};

/// How many lines of the verifier's log to show: its verdict is at the end.
const VERIFIER_TAIL_LINES: usize = 25;

/// Why slabtrace could not start tracing.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Missing privileges.
    #[error(
        "slabtrace needs {missing} to load BPF programs: run it as root (sudo), or grant \
         CAP_BPF and CAP_PERFMON"
    )]
    NotPrivileged {
        /// The capabilities that are missing, spelled out.
        missing: String,
    },
    /// The kernel's BTF could not be read.
    #[error(
        "cannot read the kernel's BTF at {path} ({source}): slabtrace needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y, or pass --btf with the path of a BTF file for this kernel"
    )]
    Btf {
        /// Where we looked.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: aya::BtfError,
    },
    /// A tracepoint is not there or has arguments we were not written for.
    #[error("{0}")]
    Layout(#[from] crate::kernel::layout::LayoutError),
    /// The verifier said no.
    #[error(
        "the kernel's verifier rejected the BPF program {program} ({source}); this kernel is not \
         supported yet, please report it with this log tail:\n{log_tail}"
    )]
    Verifier {
        /// Which program.
        program: String,
        /// The syscall's error.
        source: io::Error,
        /// The end of the verifier's log.
        log_tail: String,
    },
    /// A map could not be created.
    #[error(
        "the kernel refused to create the BPF map {name} ({source}): lower --max-live or \
         --max-keys, or give slabtrace more locked memory (RLIMIT_MEMLOCK, or the memory \
         limit of its cgroup)"
    )]
    MapCreate {
        /// Which map.
        name: String,
        /// The syscall's error.
        source: io::Error,
    },
    /// Attaching a program failed.
    #[error("cannot attach the BPF program {program}: {source}")]
    Attach {
        /// Which program.
        program: &'static str,
        /// Why.
        #[source]
        source: ProgramError,
    },
    /// Before Linux 5.11 maps are charged to `RLIMIT_MEMLOCK`, and it could not be raised.
    #[error(
        "this kernel (before Linux 5.11) charges BPF maps to RLIMIT_MEMLOCK, which is {limit} \
         bytes here, and slabtrace may not raise it: grant CAP_SYS_RESOURCE too, or raise the \
         memlock limit of its container or service"
    )]
    MemlockLimit {
        /// The limit in force.
        limit: u64,
    },
    /// The program type asked for cannot trace this kernel's kmem events.
    #[error(
        "the kmem programs cannot be loaded as {0:?} tracepoints on this kernel: leave \
         --tracepoint-programs at auto"
    )]
    NoPrograms(super::kmem::TracepointPrograms),
    /// The object is missing a program: a build problem, not a user's.
    #[error("the BPF object has no program {0}; rebuild slabtrace")]
    MissingProgram(&'static str),
    /// The maps could not be pinned or their pins reused.
    #[error(transparent)]
    Pin(#[from] super::PinError),
    /// Anything else aya reports while loading the object.
    #[error("cannot load slabtrace's BPF object: {0}")]
    Load(#[source] EbpfError),
}

impl ProbeError {
    /// Classifies an error from `EbpfLoader::load`.
    pub(crate) fn from_load(error: EbpfError) -> Self {
        match error {
            EbpfError::MapError(MapError::CreateError { name, io_error }) => {
                if is_permission(&io_error) {
                    Self::not_privileged()
                } else {
                    Self::MapCreate { name, source: io_error }
                }
            }
            other => Self::Load(other),
        }
    }

    /// Classifies an error from loading or attaching one program.
    pub(crate) fn program(program: &'static str, error: ProgramError) -> Self {
        match error {
            // The verifier answers EACCES for a program it rejects, so a load error is a
            // verifier verdict: privileges were checked before loading.
            ProgramError::LoadError { io_error, verifier_log } => Self::Verifier {
                program: program.to_owned(),
                source: io_error,
                log_tail: tail(&verifier_log.to_string(), VERIFIER_TAIL_LINES),
            },
            other => Self::Attach { program, source: other },
        }
    }

    fn not_privileged() -> Self {
        Self::NotPrivileged { missing: "CAP_BPF and CAP_PERFMON (or root)".to_owned() }
    }
}

fn is_permission(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EPERM)
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn permission_errors_become_the_privilege_sentence() {
        let e = ProbeError::from_load(EbpfError::MapError(MapError::CreateError {
            name: "LIVE".into(),
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        }));
        assert!(e.to_string().contains("run it as root"), "{e}");
        let e = ProbeError::from_load(EbpfError::MapError(MapError::CreateError {
            name: "LIVE".into(),
            io_error: io::Error::from_raw_os_error(libc::ENOMEM),
        }));
        assert!(e.to_string().contains("lower --max-live"), "{e}");
    }
}
