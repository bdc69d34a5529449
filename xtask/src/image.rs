//! `cargo xtask image`: slabtrace's container image, from a static binary built on this host.
//!
//! The binary is built with static glibc (`-C target-feature=+crt-static`, for the target only
//! so that build scripts, aya-build's among them, stay dynamic) into `target/image`, a target
//! directory of its own so the shared `target/` keeps its dynamic builds. The Dockerfile's
//! `prebuilt` stage copies it onto `scratch`, so no registry is needed; the build context is a
//! directory of just the Dockerfile and the binary (`target/image/context`). Then the image must
//! answer `--version` with this version, and, with `--output`, it is also written to an archive
//! that `ctr images import` (containerd, so a kind or k3s node) and `podman load` take.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cmd, setup};

/// The image's name; tagged with the workspace's version and `latest`.
const IMAGE_NAME: &str = "localhost/slabtrace";

/// Where the static build goes, under the workspace root.
const TARGET_DIR: &str = "target/image";

/// Static glibc, no symbol table: the Dockerfile's `build` stage uses the same.
const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static -C strip=symbols";

/// The one file of `target/` that .containerignore lets into the build context.
const PREBUILT: &str = "target/image/slabtrace";

/// The build context `cargo xtask image` uses: the Dockerfile and [`PREBUILT`], nothing else.
const CONTEXT_DIR: &str = "target/image/context";

/// The archive `cargo xtask test` writes for the image test, under the workspace root.
pub const TEST_ARCHIVE: &str = "target/image/slabtrace.tar";

/// The variable that tells tests/tests/image.rs where the archive is.
pub const ARCHIVE_ENV: &str = "SLABTRACE_IMAGE_ARCHIVE";

/// `cargo xtask image`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The image reference to tag (`IMAGE_NAME:latest` of the same name is tagged too); default
    /// `localhost/slabtrace:<version>`.
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,
    /// The tool that builds the image; default: podman, else buildah, else docker (with a
    /// running engine), else podman is installed (Debian, as root).
    #[arg(long, value_enum)]
    pub builder: Option<Builder>,
    /// Also write the image to this file: an archive that `ctr images import` and `podman load`
    /// take (a docker archive; OCI layout inside for podman and buildah's `oci-archive` would
    /// lose the name on import).
    #[arg(long, value_name = "FILE.tar")]
    pub output: Option<PathBuf>,
}

/// The tools that can build the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Builder {
    Podman,
    Buildah,
    Docker,
}

impl Builder {
    fn program(self) -> &'static str {
        match self {
            Self::Podman => "podman",
            Self::Buildah => "buildah",
            Self::Docker => "docker",
        }
    }
}

/// Builds the static binary, then the image; checks it, prints its id and size.
pub fn run(args: &ImageArgs) -> Result<()> {
    let root = setup::workspace_root()?;
    let version = env!("CARGO_PKG_VERSION");
    let tag = args.tag.clone().unwrap_or_else(|| format!("{IMAGE_NAME}:{version}"));
    let latest = format!("{}:latest", name_of(&tag));
    let builder = match args.builder {
        Some(b) => {
            ensure!(
                setup::which(b.program()).is_some(),
                "{} is not installed: install it, or leave out --builder to use podman",
                b.program()
            );
            b
        }
        None => detect_builder()?,
    };
    let ulimits = ulimit_args(builder)?;

    let binary = build_static_binary(&root, "slabtrace", "slabtrace")?;
    let out = Command::new(&binary).arg("--version").output()?;
    ensure!(out.status.success(), "{} --version failed", binary.display());
    // The binary where the Dockerfile's `prebuilt` stage expects it, for a hand-run
    // `podman build --build-arg BINARY=prebuilt .`; and a context of just the Dockerfile and
    // the binary, so no builder reads the source tree (docker ignores .containerignore).
    let context = root.join(CONTEXT_DIR);
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(context.join(PREBUILT).parent().unwrap_or(&context))?;
    for dest in [root.join(PREBUILT), context.join(PREBUILT)] {
        fs::copy(&binary, &dest)
            .with_context(|| format!("copying {} to {}", binary.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
    }
    fs::copy(root.join("Dockerfile"), context.join("Dockerfile")).context("copying Dockerfile")?;

    let revision = git_revision(&root);
    let b = builder.program();
    let mut build = Command::new(b);
    build.arg(if builder == Builder::Buildah { "bud" } else { "build" });
    build
        .args(["--build-arg", "BINARY=prebuilt"])
        .args(["--build-arg", &format!("VERSION={version}")])
        .args(["--build-arg", &format!("REVISION={revision}")])
        .args(&ulimits)
        .args(["--tag", &tag, "--tag", &latest, "--file"])
        .arg(context.join("Dockerfile"))
        .arg(&context);
    if builder == Builder::Docker {
        // The legacy builder builds every stage, the `build` one too, which pulls RUST_IMAGE.
        build.env("DOCKER_BUILDKIT", "1");
    }
    eprintln!("xtask: building {tag} with {b}");
    let status = build.status().with_context(|| format!("cannot run {b}"))?;
    ensure!(status.success(), "`{b} build` failed ({status}): see its output above");

    let printed = version_in_image(builder, &tag, &ulimits)?;
    let want = format!("slabtrace {version}");
    ensure!(
        printed.trim() == want,
        "the image printed {:?} for --version, not {want:?}: rebuild with `cargo xtask image`",
        printed.trim()
    );
    println!("{tag} (also {latest}): {}", describe(builder, &tag)?);

    if let Some(output) = &args.output {
        save(builder, &tag, output)?;
        println!("wrote {} (import with `ctr -n k8s.io images import`)", output.display());
    }
    Ok(())
}

/// The reference without its tag (`localhost:5000/a/b:1` → `localhost:5000/a/b`).
fn name_of(reference: &str) -> &str {
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => reference,
    }
}

/// podman, else buildah, else docker with an engine that answers, else podman installed now.
fn detect_builder() -> Result<Builder> {
    if setup::which("podman").is_some() {
        return Ok(Builder::Podman);
    }
    if setup::which("buildah").is_some() {
        return Ok(Builder::Buildah);
    }
    if setup::which("docker").is_some()
        && Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success())
    {
        return Ok(Builder::Docker);
    }
    setup::ensure_packages(setup::IMAGE_PACKAGES)
        .context("no image builder: install podman (`apt-get install podman`)")?;
    Ok(Builder::Podman)
}

/// `cargo ARGS --target <host triple> --target-dir target/image` with static glibc: the triple
/// named explicitly so that RUSTFLAGS reach only the target's crates, not build scripts;
/// aya-build builds the BPF object with flags of its own (`CARGO_ENCODED_RUSTFLAGS`), so
/// stripping symbols here leaves its BTF alone. Also returns where the triple's profiles put
/// their outputs (`target/image/<triple>`).
pub(crate) fn static_cargo(root: &Path, args: &[&str]) -> (Command, PathBuf) {
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut cargo = Command::new("cargo");
    cargo
        .args(args)
        .args(["--target", &target])
        .arg("--target-dir")
        .arg(root.join(TARGET_DIR))
        .current_dir(root)
        .env("RUSTFLAGS", STATIC_RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    (cargo, root.join(TARGET_DIR).join(target))
}

/// `cargo build --release` of `package`'s binary `bin` with static glibc into `target/image`;
/// returns the binary, after checking that it has no program interpreter.
pub(crate) fn build_static_binary(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    setup::ensure_toolchain()?;
    let (mut cargo, out) =
        static_cargo(root, &["build", "--release", "--package", package, "--bin", bin]);
    let status = cargo.status().context("cannot run cargo")?;
    ensure!(status.success(), "the static build of {bin} failed ({status}): see above");
    let binary = out.join("release").join(bin);
    ensure_static(&binary)?;
    Ok(binary)
}

/// Fails unless `binary` is statically linked (no `PT_INTERP`), so it runs on `scratch` or as
/// a VM's init.
pub(crate) fn ensure_static(binary: &Path) -> Result<()> {
    let elf = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    ensure!(
        !has_interpreter(&elf),
        "{} is dynamically linked, so it cannot run on `scratch`: check that nothing overrides \
         RUSTFLAGS (the build sets `-C target-feature=+crt-static`)",
        binary.display()
    );
    Ok(())
}

/// Whether an ELF file names a program interpreter (`PT_INTERP`), i.e. is dynamically linked.
/// Anything that is not a 64-bit ELF file counts as dynamic.
fn has_interpreter(elf: &[u8]) -> bool {
    use object::{
        elf::PT_INTERP,
        read::elf::{ElfFile64, ProgramHeader as _},
    };
    let Ok(file) = ElfFile64::<object::Endianness>::parse(elf) else { return true };
    file.elf_program_headers().iter().any(|p| p.p_type(file.endian()) == PT_INTERP)
}

/// The commit checked out, for the image's revision label.
fn git_revision(root: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

/// What `slabtrace --version` prints inside the image (no network: it needs none).
fn version_in_image(builder: Builder, tag: &str, ulimits: &[String]) -> Result<String> {
    let out = match builder {
        Builder::Podman | Builder::Docker => Command::new(builder.program())
            .args(["run", "--rm", "--network", "none"])
            .args(ulimits)
            .args([tag, "--version"])
            .output()?,
        Builder::Buildah => {
            let from = Command::new("buildah").arg("from").args(ulimits).arg(tag).output()?;
            ensure!(from.status.success(), "`buildah from {tag}` failed");
            let container = String::from_utf8_lossy(&from.stdout).trim().to_owned();
            let out = Command::new("buildah")
                .args(["run", "--network", "none", &container, "--", "/usr/bin/slabtrace"])
                .arg("--version")
                .output();
            let _ = Command::new("buildah").args(["rm", &container]).output();
            out?
        }
    };
    ensure!(
        out.status.success(),
        "the image did not run `slabtrace --version` ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The image's id and size, for the log.
fn describe(builder: Builder, tag: &str) -> Result<String> {
    let b = builder.program();
    let out = match builder {
        Builder::Podman | Builder::Docker => Command::new(b)
            .args(["image", "inspect", "--format", "{{.Id}} {{.Size}}", tag])
            .output()?,
        Builder::Buildah => Command::new(b)
            .args(["images", "--noheading", "--no-trunc", "--format", "{{.ID}} {{.Size}}", tag])
            .output()?,
    };
    ensure!(out.status.success(), "`{b} image inspect {tag}` failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let id = fields.next().unwrap_or("?").trim_start_matches("sha256:").to_owned();
    let size = fields.collect::<Vec<_>>().join(" ");
    let size = size.parse::<u64>().map_or(size, |bytes| {
        format!("{:.1} MiB ({bytes} bytes)", bytes as f64 / f64::from(1 << 20))
    });
    Ok(format!("image id {id}, size {size}"))
}

/// Writes the image to `output` as a docker archive: `ctr images import` names the image from
/// its `RepoTags`, where an OCI archive from podman carries only the tag.
fn save(builder: Builder, tag: &str, output: &Path) -> Result<()> {
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    // podman and buildah refuse to overwrite an archive.
    let _ = fs::remove_file(output);
    let path = output.to_str().context("the --output path is not UTF-8")?;
    match builder {
        Builder::Podman => {
            cmd("podman", &["save", "--format", "docker-archive", "--output", path, tag])
        }
        Builder::Buildah => cmd("buildah", &["push", tag, &format!("docker-archive:{path}:{tag}")]),
        Builder::Docker => cmd("docker", &["save", "--output", path, tag]),
    }
    .with_context(|| format!("writing the image to {}", output.display()))
}

/// podman (and buildah's `RUN`) set `nofile` and `nproc` limits on every container, by default
/// 1048576, above what a process without `CAP_SYS_RESOURCE` (a container or a VM like this
/// project's) can set: `runc` then fails with "error setting rlimits … operation not permitted".
/// So every podman and buildah command that starts a container is given this machine's own
/// limits on its command line. (An earlier version wrote them into the host's
/// /etc/containers/containers.conf: a build must not rewrite the system's configuration.)
fn ulimit_args(builder: Builder) -> Result<Vec<String>> {
    if builder == Builder::Docker || has_cap_sys_resource() {
        return Ok(Vec::new());
    }
    let (nofile_soft, nofile_hard) = rlimit(libc::RLIMIT_NOFILE)?;
    let (nproc_soft, nproc_hard) = rlimit(libc::RLIMIT_NPROC)?;
    // podman 4.3 lowers its own RLIMIT_NPROC to 32768 when it starts (seen with strace), and a
    // container cannot get more than the runtime that starts it has.
    let (nproc_soft, nproc_hard) = (nproc_soft.min(32_768), nproc_hard.min(32_768));
    Ok(vec![
        "--ulimit".into(),
        format!("nofile={nofile_soft}:{nofile_hard}"),
        "--ulimit".into(),
        format!("nproc={nproc_soft}:{nproc_hard}"),
    ])
}

/// The soft and hard limit of `resource` for this process.
fn rlimit(resource: libc::__rlimit_resource_t) -> Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit through a pointer to a live, writable one.
    if unsafe { libc::getrlimit(resource, &raw mut limit) } != 0 {
        bail!("getrlimit failed: {}", std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Whether this process may raise its hard limits (and so may podman, started from it).
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim().to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_reference_without_its_tag() {
        assert_eq!(name_of("localhost/slabtrace:0.1.0"), "localhost/slabtrace");
        assert_eq!(name_of("localhost:5000/slabtrace:1"), "localhost:5000/slabtrace");
        assert_eq!(name_of("localhost:5000/slabtrace"), "localhost:5000/slabtrace");
        assert_eq!(name_of("slabtrace"), "slabtrace");
    }

    /// A 64-bit little-endian ELF header for x86-64 with no program headers, and one
    /// `PT_INTERP` header after it when `interp`.
    fn elf(interp: bool) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01"); // 64-bit, little-endian, version 1
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf[20..24].copy_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
        elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        if interp {
            elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
            elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
            elf.extend(ph);
        }
        elf
    }

    #[test]
    fn an_elf_without_an_interpreter_is_static_and_garbage_is_not() {
        assert!(!has_interpreter(&elf(false)));
        assert!(has_interpreter(&elf(true)));
        assert!(has_interpreter(b"#!/bin/sh\n"));
        // This test's own binary is linked dynamically.
        assert!(has_interpreter(&fs::read(std::env::current_exe().unwrap()).unwrap()));
    }
}
