//! Builds the BPF object (`slabtrace-ebpf`) with nightly Rust and bpf-linker, so that a plain
//! `cargo build` produces a complete binary. `cargo xtask` installs the toolchain pieces first.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("slabtrace has no parent directory"))?
        .join("slabtrace-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [Package { name: "slabtrace-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        Toolchain::default(),
    )
}
