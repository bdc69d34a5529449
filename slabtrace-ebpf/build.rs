//! Rebuild the BPF object when bpf-linker changes: it is the linker, and cargo does not track it.
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
