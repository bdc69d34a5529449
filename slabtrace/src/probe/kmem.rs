//! Which kmem programs go where on this kernel, and loading them so.
//!
//! The tracepoint programs exist twice in the object, as BTF tracepoints (`tp_btf`) and as raw
//! tracepoints (`raw_tp`), with the same bodies: Linux 6.1 to 6.12 refuse a `tp_btf` program
//! that reads a `const void *` argument (the object's address, which every kmem program
//! reads), while a raw tracepoint's arguments are plain u64s on every kernel. Both run through
//! the same dispatch in the kernel, so the choice costs nothing per event; `tp_btf` is tried
//! first because it is what the kernel checks most closely, and raw tracepoints are the
//! fallback, said in the log. Before 6.1, allocations from named caches are traced on return
//! from the allocation functions (`fexit`), since that tracepoint has no cache pointer there
//! (see [`CacheAlloc`]).
//!
//! [`plan`] is pure: the hooks and the choices in, the programs and their targets out.

use aya::{
    Btf as AyaBtf, Ebpf,
    programs::{BtfTracePoint, FExit, Program, ProgramError, RawTracePoint},
};
use log::debug;

use super::{ProbeError, ProbeSet};
use crate::kernel::layout::{CacheAlloc, KmemHooks, TRACEPOINTS};

/// The program type the kmem tracepoint programs are loaded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TracepointPrograms {
    /// BTF tracepoints where the kernel's verifier accepts them, else raw tracepoints.
    #[default]
    Auto,
    /// BTF tracepoints (`tp_btf`) only.
    Btf,
    /// Raw tracepoints (`raw_tp`) only.
    Raw,
}

/// One program and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A BTF tracepoint program on one tracepoint.
    Btf {
        /// The program's name in the object.
        program: &'static str,
        /// The tracepoint.
        tracepoint: &'static str,
    },
    /// A raw tracepoint program, attached to each of `tracepoints`.
    Raw {
        /// The program's name in the object.
        program: &'static str,
        /// The tracepoints.
        tracepoints: Vec<&'static str>,
    },
    /// An fexit program on one kernel function.
    Fexit {
        /// The program's name in the object.
        program: &'static str,
        /// The function.
        function: &'static str,
    },
}

impl Hook {
    /// The program's name in the object.
    #[must_use]
    pub fn program(&self) -> &'static str {
        match self {
            Self::Btf { program, .. } | Self::Raw { program, .. } | Self::Fexit { program, .. } => {
                program
            }
        }
    }
}

/// A program to attach, and what becomes of the events the kernel's recursion guard makes it
/// skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// What to attach.
    pub hook: Hook,
    /// Its skipped events.
    pub misses: Misses,
}

/// What becomes of the events a program skips (see the BPF side's `account::Nesting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misses {
    /// Lost: it is alone on its events.
    Lost,
    /// Taken by the program for nested events, but those that arrive while that one is busy
    /// too: the lost ones are its misses less what the nested program took.
    Nested,
    /// None lost: it is the program for nested events, and what it skips arrived while the
    /// first program was idle, which took it (or is counted in the first's misses).
    Taken,
}

/// The ids of the attached programs whose misses matter: those alone on their events, and
/// `kmem_cache_free`'s first when a second takes its nested events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MissAccount {
    /// Programs whose every miss is a lost event.
    pub lost: Vec<u32>,
    /// The program whose misses the nested program takes (lost: its misses less those).
    pub nested: Option<u32>,
}

/// The tracepoint program type a load actually used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// BTF tracepoints.
    Btf,
    /// Raw tracepoints.
    Raw,
}

/// The raw twin of tracepoint program `program` (`kmem_cache_free_nested` →
/// `kmem_cache_free_nested_raw`).
fn raw_name(program: &'static str) -> &'static str {
    match program {
        "kmem_cache_alloc" => "kmem_cache_alloc_raw",
        "kmem_cache_free" => "kmem_cache_free_raw",
        "kmem_cache_free_nested" => "kmem_cache_free_nested_raw",
        "kmalloc" => "kmalloc_raw",
        "kfree" => "kfree_raw",
        // Every floor program of one raw tracepoint is the same empty body.
        _ => "floor_raw",
    }
}

/// The programs to attach for `hooks`, with tracepoint programs of type `kind` and, with
/// `nested`, the programs for nested events, or the empty floor programs.
///
/// A BTF tracepoint program is bound to one tracepoint at load, so where `kmalloc` has a
/// `kmalloc_node` twin (before 6.1) the plan for BTF tracepoints is None: raw tracepoints
/// serve there. So does the floor on kernels that trace allocations with fexit, which has no
/// empty twin.
#[must_use]
pub fn plan(hooks: &KmemHooks, kind: Loaded, set: ProbeSet, nested: bool) -> Option<Vec<Planned>> {
    if kind == Loaded::Btf && hooks.kmalloc.len() > 1 {
        return None;
    }
    let floor = set == ProbeSet::Floor;
    let mut planned = Vec::new();
    for tp in &TRACEPOINTS {
        let tracepoints: Vec<&'static str> =
            if tp.name == "kmalloc" { hooks.kmalloc.clone() } else { vec![tp.name] };
        if tp.name == "kmem_cache_alloc"
            && let CacheAlloc::Fexit(functions) = &hooks.cache_alloc
        {
            if floor {
                return None;
            }
            for &(function, program) in functions {
                planned.push(Planned {
                    hook: Hook::Fexit { program, function },
                    misses: Misses::Lost,
                });
            }
            continue;
        }
        let programs: Vec<&'static str> = if floor {
            vec![tp.floor]
        } else if nested {
            std::iter::once(tp.name).chain(tp.nested.iter().copied()).collect()
        } else {
            vec![tp.name]
        };
        let alone = programs.len() == 1;
        for (i, program) in programs.into_iter().enumerate() {
            let misses = match (alone, i) {
                (true, _) => Misses::Lost,
                (false, 0) => Misses::Nested,
                (false, _) => Misses::Taken,
            };
            let hook = match kind {
                Loaded::Btf => Hook::Btf { program, tracepoint: tp.name },
                Loaded::Raw => {
                    Hook::Raw { program: raw_name(program), tracepoints: tracepoints.clone() }
                }
            };
            planned.push(Planned { hook, misses });
        }
    }
    Some(planned)
}

/// Loads and attaches the kmem programs: BTF tracepoints if `choice` allows and the kernel
/// accepts them, else raw tracepoints. Returns the type used and the ids of the programs whose
/// skipped runs are lost events. On failure nothing stays loaded.
pub fn attach(
    ebpf: &mut Ebpf,
    btf: &AyaBtf,
    hooks: &KmemHooks,
    set: ProbeSet,
    nested: bool,
    choice: TracepointPrograms,
) -> Result<(Loaded, MissAccount), ProbeError> {
    let kinds: &[Loaded] = match choice {
        TracepointPrograms::Auto => &[Loaded::Btf, Loaded::Raw],
        TracepointPrograms::Btf => &[Loaded::Btf],
        TracepointPrograms::Raw => &[Loaded::Raw],
    };
    let mut last = None;
    for &kind in kinds {
        let Some(planned) = plan(hooks, kind, set, nested) else {
            debug!("no {kind:?} plan for this kernel's kmem hooks");
            continue;
        };
        match attach_all(ebpf, btf, &planned) {
            Ok(account) => return Ok((kind, account)),
            Err(e) => {
                debug!("kmem programs as {kind:?} did not load: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(ProbeError::NoPrograms(choice)))
}

/// Loads and attaches every planned program, in order; if one fails, unloads them all.
fn attach_all(
    ebpf: &mut Ebpf,
    btf: &AyaBtf,
    planned: &[Planned],
) -> Result<MissAccount, ProbeError> {
    let mut account = MissAccount::default();
    for (i, p) in planned.iter().enumerate() {
        match attach_one(ebpf, btf, &p.hook) {
            Ok(id) => match p.misses {
                Misses::Lost => account.lost.push(id),
                Misses::Nested => account.nested = Some(id),
                Misses::Taken => {}
            },
            Err(e) => {
                unload(ebpf, &planned[..=i]);
                return Err(e);
            }
        }
    }
    Ok(account)
}

/// Loads and attaches one program (loading once if it goes on several tracepoints); returns its
/// id.
fn attach_one(ebpf: &mut Ebpf, btf: &AyaBtf, hook: &Hook) -> Result<u32, ProbeError> {
    let name = hook.program();
    let program = ebpf.program_mut(name).ok_or(ProbeError::MissingProgram(name))?;
    load_and_attach(program, btf, hook).map_err(|source| ProbeError::program(name, source))
}

fn load_and_attach(program: &mut Program, btf: &AyaBtf, hook: &Hook) -> Result<u32, ProgramError> {
    let name = hook.program();
    match hook {
        Hook::Btf { tracepoint, .. } => {
            let p: &mut BtfTracePoint = program.try_into()?;
            p.load(tracepoint, btf)?;
            p.attach()?;
            debug!("attached {name} to tp_btf/{tracepoint}");
            Ok(p.info()?.id())
        }
        Hook::Raw { tracepoints, .. } => {
            let p: &mut RawTracePoint = program.try_into()?;
            // The floor's one raw program goes on several tracepoints of the plan.
            if p.fd().is_err() {
                p.load()?;
            }
            for tp in tracepoints {
                p.attach(tp)?;
                debug!("attached {name} to raw_tp/{tp}");
            }
            Ok(p.info()?.id())
        }
        Hook::Fexit { function, .. } => {
            let p: &mut FExit = program.try_into()?;
            p.load(function, btf)?;
            p.attach()?;
            debug!("attached {name} to fexit/{function}");
            Ok(p.info()?.id())
        }
    }
}

/// Unloads the programs of `planned` that are loaded.
fn unload(ebpf: &mut Ebpf, planned: &[Planned]) {
    for p in planned {
        if let Some(program) = ebpf.program_mut(p.hook.program()) {
            // Not loaded is an error too, and as good as unloaded.
            let _ = match program {
                Program::BtfTracePoint(p) => p.unload(),
                Program::RawTracePoint(p) => p.unload(),
                Program::FExit(p) => p.unload(),
                _ => Ok(()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_6() -> KmemHooks {
        KmemHooks {
            cache_alloc: CacheAlloc::Tracepoint,
            kmalloc: vec!["kmalloc"],
            free_has_cache: true,
        }
    }

    fn linux_5_10() -> KmemHooks {
        KmemHooks {
            cache_alloc: CacheAlloc::Fexit(vec![
                ("kmem_cache_alloc", "kmem_cache_alloc_exit"),
                ("kmem_cache_alloc_node", "kmem_cache_alloc_node_exit"),
            ]),
            kmalloc: vec!["kmalloc", "kmalloc_node"],
            free_has_cache: false,
        }
    }

    fn programs(plan: &[Planned]) -> Vec<(&'static str, bool)> {
        plan.iter().map(|p| (p.hook.program(), p.misses == Misses::Lost)).collect()
    }

    #[test]
    fn btf_and_raw_plans_name_twins_on_the_same_tracepoints() {
        let btf = plan(&linux_6(), Loaded::Btf, ProbeSet::Slabtrace, true).unwrap();
        let raw = plan(&linux_6(), Loaded::Raw, ProbeSet::Slabtrace, true).unwrap();
        assert_eq!(
            programs(&btf),
            [
                ("kmem_cache_alloc", true),
                ("kmem_cache_free", false),
                ("kmem_cache_free_nested", false),
                ("kmalloc", true),
                ("kfree", true),
            ]
        );
        assert_eq!(
            programs(&raw),
            [
                ("kmem_cache_alloc_raw", true),
                ("kmem_cache_free_raw", false),
                ("kmem_cache_free_nested_raw", false),
                ("kmalloc_raw", true),
                ("kfree_raw", true),
            ]
        );
        assert_eq!(raw[3].hook, Hook::Raw { program: "kmalloc_raw", tracepoints: vec!["kmalloc"] });
        assert_eq!(
            btf[1].hook,
            Hook::Btf { program: "kmem_cache_free", tracepoint: "kmem_cache_free" }
        );
        assert_eq!((btf[1].misses, btf[2].misses), (Misses::Nested, Misses::Taken));
    }

    #[test]
    fn without_the_nested_program_one_free_program_takes_all_and_loses_what_it_skips() {
        let raw = plan(&linux_6(), Loaded::Raw, ProbeSet::Slabtrace, false).unwrap();
        assert_eq!(programs(&raw)[1], ("kmem_cache_free_raw", true));
        assert_eq!(raw.len(), 4);
    }

    #[test]
    fn before_6_1_allocations_go_through_fexit_and_kmalloc_node_through_the_raw_program() {
        let hooks = linux_5_10();
        assert_eq!(plan(&hooks, Loaded::Btf, ProbeSet::Slabtrace, true), None);
        let raw = plan(&hooks, Loaded::Raw, ProbeSet::Slabtrace, true).unwrap();
        assert_eq!(
            raw[..2].iter().map(|p| p.hook.clone()).collect::<Vec<_>>(),
            [
                Hook::Fexit { program: "kmem_cache_alloc_exit", function: "kmem_cache_alloc" },
                Hook::Fexit {
                    program: "kmem_cache_alloc_node_exit",
                    function: "kmem_cache_alloc_node"
                },
            ]
        );
        assert!(raw.iter().any(|p| p.hook
            == Hook::Raw { program: "kmalloc_raw", tracepoints: vec!["kmalloc", "kmalloc_node"] }));
        // The floor has no fexit twin.
        assert_eq!(plan(&hooks, Loaded::Raw, ProbeSet::Floor, true), None);
    }

    #[test]
    fn the_floor_is_one_empty_program_per_tracepoint() {
        let btf = plan(&linux_6(), Loaded::Btf, ProbeSet::Floor, true).unwrap();
        assert_eq!(
            programs(&btf),
            [
                ("floor_kmem_cache_alloc", true),
                ("floor_kmem_cache_free", true),
                ("floor_kmalloc", true),
                ("floor_kfree", true),
            ]
        );
        let raw = plan(&linux_6(), Loaded::Raw, ProbeSet::Floor, true).unwrap();
        assert!(raw.iter().all(|p| p.hook.program() == "floor_raw"), "{raw:?}");
    }
}
