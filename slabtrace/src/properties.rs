//! Property tests: every parser of outside input (kernel files, BPF records, BTF, cgroup
//! paths, the `advise --from` answer) and every encoder of untrusted strings, fed arbitrary
//! text and bytes and text shaped like the real thing. The property is always at least: no
//! panic. `cargo xtask test` runs them with proptest's default 256 cases each;
//! `cargo xtask fuzz --cases N` runs them longer (`PROPTEST_CASES`).

use proptest::prelude::*;

use crate::{
    advice::{Advice, parse_dentry_state},
    cgroup::{kubepods::identify, mount},
    kernel::{btf::Btf, kallsyms::Kallsyms},
    node::{
        meminfo::parse_meminfo,
        oom::{OomSymbols, parse_event},
        slabinfo::parse_slabinfo,
    },
    output::printable::{needs_escape, printable},
    pipeline::parse_process_usage,
    probe::caps::parse_cap_eff,
};

/// Text from a small alphabet that hits the parsers' separators, digits and escapes often.
fn shaped_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just(":".to_owned()),
            Just("\\".to_owned()),
            Just("kB".to_owned()),
            Just("-".to_owned()),
            Just("/".to_owned()),
            "[0-9]{1,20}",
            "[a-z_]{1,12}",
            "\\PC{0,4}",
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

/// A kubelet-shaped cgroup path with arbitrary pieces.
fn cgroup_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("kubepods".to_owned()),
            Just("kubepods.slice".to_owned()),
            Just("burstable".to_owned()),
            Just("besteffort".to_owned()),
            "kubepods-[a-z]{0,10}-pod[0-9a-f_\\-]{0,40}\\.slice",
            "pod[0-9a-f\\-]{0,40}",
            "(cri-containerd|crio|docker)-[0-9a-f]{0,70}\\.scope",
            "[0-9a-f]{60,70}",
            "\\PC{0,12}",
        ],
        0..7,
    )
    .prop_map(|parts| format!("/{}", parts.join("/")))
}

proptest! {
    #[test]
    fn slabinfo_never_panics(text in prop_oneof![any::<String>(), shaped_text()]) {
        let _ = parse_slabinfo(&text);
        let _ = parse_slabinfo(&format!("slabinfo - version: 2.1\n# name <active_objs>\n{text}"));
    }

    #[test]
    fn meminfo_never_panics(text in prop_oneof![any::<String>(), shaped_text()]) {
        let _ = parse_meminfo(&text);
    }

    #[test]
    fn small_proc_files_never_panic(text in prop_oneof![any::<String>(), shaped_text()]) {
        let _ = parse_dentry_state(&text);
        let _ = parse_cap_eff(&text);
        let _ = parse_process_usage(&text, &text, 100.0);
    }

    #[test]
    fn kallsyms_never_panics(
        text in prop_oneof![any::<String>(), shaped_text()],
        addr in any::<u64>(),
    ) {
        let table = Kallsyms::parse(&text);
        let _ = table.name(addr);
        let _ = table.function_ranges(&["out_of_memory"]);
        let _ = OomSymbols::parse(&text);
    }

    #[test]
    fn mountinfo_never_panics(text in prop_oneof![any::<String>(), shaped_text()]) {
        let _ = mount::mounts(&text).count();
        let _ = mount::unescape(&text);
    }

    #[test]
    fn cgroup_paths_never_panic(path in prop_oneof![cgroup_path(), any::<String>()]) {
        let _ = identify(&path);
    }

    #[test]
    fn oom_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_event(&bytes);
    }

    #[test]
    fn btf_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        (type_len, str_off, str_len) in (0u32..600, 0u32..600, 0u32..600),
    ) {
        let _ = Btf::parse(&body);
        // A well-formed header over an arbitrary body: the section bounds and the type
        // records are what must be checked.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xeb9f_u16.to_le_bytes());
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&24u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&type_len.to_le_bytes());
        bytes.extend_from_slice(&str_off.to_le_bytes());
        bytes.extend_from_slice(&str_len.to_le_bytes());
        bytes.extend_from_slice(&body);
        let _ = Btf::parse(&bytes);
    }

    #[test]
    fn advise_answers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<Advice>(&bytes);
    }

    #[test]
    fn printable_text_has_no_control_character(text in any::<String>()) {
        let out = printable(&text);
        prop_assert!(!out.chars().any(char::is_control), "{:?}", out);
        if !text.chars().any(needs_escape) {
            prop_assert_eq!(out.as_ref(), text.as_str());
        }
    }
}
