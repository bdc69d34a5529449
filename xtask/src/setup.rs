//! Installs the BPF toolchain pieces: nightly's rust-src (to build `core` for the BPF target)
//! and bpf-linker 0.10.0, the last release that links with nightly's own LLVM rather than a
//! system LLVM 21+.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd;

const BPF_LINKER_VERSION: &str = "0.10.0";

/// Debian packages building slabtrace needs: protoc for the CRI protos (k8s-cri).
pub const BUILD_PACKAGES: &[(&str, &str)] = &[("protoc", "protobuf-compiler")];

/// Debian packages the integration tests need: a real containerd with runc, and busybox for
/// the test image; a real Prometheus (and promtool) to scrape the daemon; tmux to drive
/// `slabtrace top`.
pub const TEST_PACKAGES: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("busybox", "busybox-static"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("tmux", "tmux"),
];

/// What `cargo xtask test --under-load` runs beside the tests.
pub const LOAD_PACKAGES: &[(&str, &str)] = &[("stress-ng", "stress-ng")];

/// Debian packages `cargo xtask image` needs: podman builds the image (buildah and docker work
/// too, when installed), and runs it once to check it.
pub const IMAGE_PACKAGES: &[(&str, &str)] = &[("podman", "podman")];

/// Debian packages `cargo xtask vm` needs: qemu to boot the kernels (TCG or KVM), e2fsprogs for
/// the scratch disk's ext4, dpkg-deb and tar to unpack kernel packages, and the tools the tests
/// run, copied into the guest: util-linux's, and `apparmor_parser` to load the container
/// runtimes' `AppArmor` profile (tests/tests/apparmor.rs).
pub const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("mkfs.ext4", "e2fsprogs"),
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("tar", "tar"),
    ("ldd", "libc-bin"),
    ("mount", "mount"),
    ("setpriv", "util-linux"),
    ("apparmor_parser", "apparmor"),
];

/// Debian packages the deploy tests need: Python, for the virtualenv that holds the engines
/// they drive ([`ensure_python_tools`]).
pub const PYTHON_PACKAGES: &[(&str, &str)] = &[("python3", "python3")];

/// The virtualenv, under the workspace, that holds them.
const PYTHON_VENV: &str = "target/python";

/// What [`ensure_python_tools`] installs into it, with hashes.
const PYTHON_REQUIREMENTS: &str = "tests/python/requirements.txt";

/// Installs the engines the deploy tests drive into a private virtualenv, target/python:
/// Helm's (the Python package `helm-python-sdk`: Helm v4 as a shared library), to render and
/// lint the chart (tests/src/helm.rs), and Vector's remap language (`pyVRL`), to run the
/// Vector config's program (tests/src/vrl.rs). Does nothing when the virtualenv already holds
/// what tests/python/requirements.txt says.
pub fn ensure_python_tools() -> Result<()> {
    ensure_packages(PYTHON_PACKAGES)?;
    let root = workspace_root()?;
    let venv = root.join(PYTHON_VENV);
    let requirements = root.join(PYTHON_REQUIREMENTS);
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    // The requirements it was made from: a changed pin makes it again.
    let stamp = venv.join("slabtrace-requirements.txt");
    let python = venv.join("bin/python3");
    if python.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the deploy tests' Python tools ({PYTHON_REQUIREMENTS}) into {PYTHON_VENV}"
    );
    let venv_arg = venv.to_string_lossy().into_owned();
    if cmd("python3", &["-m", "venv", "--clear", &venv_arg]).is_err() {
        // Debian's python3 keeps venv's ensurepip in a package of its own.
        install_packages(&["python3-venv"])?;
        cmd("python3", &["-m", "venv", "--clear", &venv_arg])?;
    }
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(["--require-hashes", "--only-binary", ":all:", "--no-deps", "-r"])
        .arg(&requirements)
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !status.success() {
        bail!("installing {PYTHON_REQUIREMENTS} into {PYTHON_VENV} failed ({status})");
    }
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

/// Installs the Debian packages of `needed` (command, package) whose command is missing.
pub fn ensure_packages(needed: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = needed
        .iter()
        .filter(|(command, _)| which(command).is_none())
        .map(|(_, package)| *package)
        .collect();
    // One package may bring several of the commands (containerd and ctr).
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    install_packages(&missing)
}

/// Installs Debian packages with apt-get.
fn install_packages(missing: &[&str]) -> Result<()> {
    if !is_root() {
        bail!("missing Debian packages: run `sudo apt-get install {}`", missing.join(" "));
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    cmd("apt-get", &["update", "-qq"])?;
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("`apt-get install {}` failed ({status})", missing.join(" "));
    }
    Ok(())
}

/// The path of `command` on PATH (or in /usr/sbin, /sbin, where Debian puts some), if any.
pub fn which(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(command))
        .find(|p| p.is_file())
}

/// Installs what is missing; does nothing when everything is there.
pub fn ensure_toolchain() -> Result<()> {
    ensure_packages(BUILD_PACKAGES)?;
    let toolchains = output("rustup", &["toolchain", "list"])?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        cmd("rustup", &["toolchain", "install", "nightly", "--profile", "minimal"])
            .context("building the BPF programs needs a nightly Rust toolchain")?;
    }
    let components =
        output("rustup", &["component", "list", "--toolchain", "nightly", "--installed"])?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        cmd("rustup", &["component", "add", "rust-src", "--toolchain", "nightly"])?;
    }
    // `cargo xtask test` lints the BPF crate with nightly's clippy.
    if !components.lines().any(|l| l.starts_with("clippy")) {
        cmd("rustup", &["component", "add", "clippy", "--toolchain", "nightly"])?;
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    let have = linker
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !have.contains(BPF_LINKER_VERSION) {
        eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
        cmd(
            "cargo",
            &[
                "+nightly",
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
            ],
        )?;
    }
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}: is rustup installed?"))?;
    if !out.status.success() {
        bail!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace's root directory.
pub fn workspace_root() -> Result<PathBuf> {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("xtask has no parent directory"))
}

/// Whether we run as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Programs the tasks and tests may run without installing them: what every Debian system has
/// (packages of priority "required": tar, mount, util-linux's setpriv, dash's sh, apt), what the Rust
/// toolchain and a git checkout bring, bpf-linker (installed by [`ensure_toolchain`]), and the
/// image builders that are used only when already present.
#[cfg(test)]
const ALWAYS_THERE: &[&str] = &[
    "apt-get",
    "bpf-linker",
    "buildah",
    "cargo",
    "docker",
    "git",
    "mount",
    "rustup",
    "setpriv",
    "sh",
    "tar",
    "umount",
];

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use super::*;

    /// The programs a Rust source runs: string literals given to `Command::new` or to
    /// `cmd`, and string constants that name a path under a bin directory.
    fn programs_in(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for opener in ["Command::new(\"", "cmd(\"", ": &str = \"/usr/bin/", ": &str = \"/bin/"] {
            for (at, _) in text.match_indices(opener) {
                let rest = &text[at + opener.len()..];
                let Some(end) = rest.find('"') else { continue };
                let program = rest[..end].rsplit('/').next().unwrap_or_default();
                if !program.is_empty() {
                    found.push(program.to_owned());
                }
            }
        }
        found
    }

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Fresh-machine discipline: every program a test or a task runs is either always there
    /// or installed by the set-up (issue: a test ran bpftool, which nothing installed, and CI
    /// stayed green only on machines where someone had installed it by hand).
    #[test]
    fn every_program_the_tests_and_tasks_run_is_installed_by_the_set_up() {
        let root = workspace_root().unwrap();
        let mut files = Vec::new();
        for dir in ["tests", "xtask/src"] {
            sources(&root.join(dir), &mut files);
        }
        let installed: Vec<&str> = [
            BUILD_PACKAGES,
            TEST_PACKAGES,
            PYTHON_PACKAGES,
            LOAD_PACKAGES,
            IMAGE_PACKAGES,
            VM_PACKAGES,
        ]
        .concat()
        .iter()
        .map(|(command, _)| *command)
        .chain(ALWAYS_THERE.iter().copied())
        .collect();
        let mut missing = Vec::new();
        for file in &files {
            let text = fs::read_to_string(file).unwrap();
            for program in programs_in(&text) {
                if !installed.contains(&program.as_str()) {
                    missing.push(format!("{program} (run in {})", file.display()));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "programs that nothing installs: {missing:?}; add them to a package list in setup.rs"
        );
    }

    #[test]
    fn programs_are_found_in_each_form() {
        // Written with \u{22} for the quotes, so that this file's own scan does not find them.
        let text =
            "Command::new(\u{22}bpftool\u{22}).arg(\u{22}x\u{22}); cmd(\u{22}mount\u{22}, &[]);
            pub const TMUX: &str = \u{22}/usr/bin/tmux\u{22}; Command::new(bin);";
        assert_eq!(programs_in(text), ["bpftool", "mount", "tmux"]);
    }
}
