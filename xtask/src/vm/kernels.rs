//! The kernels the VM runner boots, as data, and how their Debian packages are fetched.
//!
//! Each kernel is a Debian meta package (`linux-image-cloud-amd64`) in a suite; apt resolves it
//! to the concrete ABI package of the day (`linux-image-6.1.0-NN-cloud-amd64`), since Debian
//! removes older ABI packages from the mirror and a hard-coded one would stop working. apt runs
//! with a state, cache and source list of its own per suite under `target/vm/apt/<suite>/`
//! (the host's sources, preferences and package lists are neither read nor written); the
//! package is downloaded once into `target/vm/kernels/` and only its `/boot` is extracted. The
//! "cloud" flavour is what VMs run: small, and with `NVMe` and ext4 built in, which the scratch
//! disk needs (no modules to load).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};

/// One kernel of the test matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpec {
    /// What `--kernel` selects and the table shows.
    pub name: &'static str,
    /// The Debian suite whose package it is (with its `-updates` and `-security` suites).
    pub suite: &'static str,
    /// The package apt resolves: a meta package (or a concrete one, to pin an ABI).
    pub package: &'static str,
}

/// The kernels slabtrace is tested on in VMs, oldest first. Adding one is a line here.
pub const KERNELS: &[KernelSpec] = &[
    // Debian 11; the pre-6.1 kmem tracepoint layout that Ubuntu 22.04's 5.15 also has.
    KernelSpec { name: "5.10", suite: "bullseye", package: "linux-image-cloud-amd64" },
    // Debian 12; the LTS most managed node pools and Amazon Linux 2023 run.
    KernelSpec { name: "6.1", suite: "bookworm", package: "linux-image-cloud-amd64" },
    // Debian 13's kernel, as Debian 12 ships it (bookworm-security).
    KernelSpec { name: "6.12", suite: "bookworm", package: "linux-image-6.12-cloud-amd64" },
];

/// The mirror and key the private sources use: Debian's own, as the host's apt does.
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The kernels named by `--kernel` (all of them when none is), in the list's order.
pub fn select(names: &[String]) -> Result<Vec<KernelSpec>> {
    for name in names {
        if !KERNELS.iter().any(|k| k.name == name) {
            let known: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
            bail!("no kernel {name:?} in the VM matrix; the kernels are {}", known.join(", "));
        }
    }
    Ok(KERNELS
        .iter()
        .filter(|k| names.is_empty() || names.iter().any(|n| n == k.name))
        .copied()
        .collect())
}

/// A kernel fetched and ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub spec: KernelSpec,
    /// The concrete package, e.g. `linux-image-6.1.0-50-cloud-amd64`.
    pub package: String,
    /// Its version, e.g. `6.1.176-1`.
    pub version: String,
    /// `/boot/vmlinuz-*` extracted from it.
    pub vmlinuz: PathBuf,
    /// `/boot/config-*`: what is built in.
    pub config: String,
}

impl Kernel {
    /// Whether `CONFIG_<option>` is built in (`=y`), not a module or absent.
    pub fn builtin(&self, option: &str) -> bool {
        builtin(&self.config, option)
    }
}

fn builtin(config: &str, option: &str) -> bool {
    config.lines().any(|l| l.strip_prefix(option).is_some_and(|rest| rest == "=y"))
}

/// What a kernel package resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The concrete image package and its version.
    pub package: String,
    pub version: String,
    /// The packages to download and unpack, with their versions.
    pub debs: Vec<(String, String)>,
}

/// apt with a private state for one suite.
pub struct Apt {
    dir: PathBuf,
    suite: String,
}

impl Apt {
    /// The private apt of `suite` under `vm_dir/apt/<suite>`, its directories created.
    pub fn new(vm_dir: &Path, suite: &str) -> Result<Self> {
        let me = Self { dir: vm_dir.join("apt").join(suite), suite: suite.to_owned() };
        for sub in ["state/lists/partial", "cache/archives/partial", "etc"] {
            fs::create_dir_all(me.dir.join(sub))
                .with_context(|| format!("mkdir {}", me.dir.join(sub).display()))?;
        }
        // An empty dpkg status: nothing is installed as far as this apt knows, so the host's
        // own packages never change what it resolves.
        let status = me.dir.join("state/status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        fs::write(me.dir.join("etc/sources.list"), sources_list(suite))?;
        Ok(me)
    }

    /// The `-o` options that point apt at this private state instead of the host's.
    fn options(&self) -> Vec<String> {
        apt_options(&self.dir)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(self.options()).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Whether package lists were fetched before (`…_Packages`, or compressed as
    /// `…_Packages.lz4` where the host's apt.conf.d says so).
    fn has_lists(&self) -> bool {
        fs::read_dir(self.dir.join("state/lists")).is_ok_and(|entries| {
            entries.flatten().any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// `apt-get update`, unless lists are there and `refresh` is false.
    pub fn update(&self, refresh: bool) -> Result<()> {
        if self.has_lists() && !refresh {
            return Ok(());
        }
        eprintln!("xtask: fetching the package lists of {} (private apt state)", self.suite);
        let status = self
            .command("apt-get")
            .args(["update", "-qq"])
            .status()
            .context("cannot run apt-get")?;
        ensure!(
            status.success(),
            "`apt-get update` of {} failed ({status}): is {MIRROR} reachable?",
            self.suite
        );
        Ok(())
    }

    /// The candidate record of `package` (`apt-cache show --no-all-versions`).
    fn show(&self, package: &str) -> Result<String> {
        let out = self
            .command("apt-cache")
            .args(["show", "--no-all-versions", package])
            .output()
            .context("cannot run apt-cache")?;
        ensure!(
            out.status.success(),
            "{package} is not in Debian {}: {}",
            self.suite,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The concrete package and version `package` stands for today, and every package (with
    /// its version) that holds a part of it: the image itself, and, since Debian 14 split it,
    /// the `linux-binary-*` (vmlinuz) and `linux-base-*` (config) packages it depends on.
    pub fn resolve(&self, package: &str) -> Result<Resolved> {
        let mut name = package.to_owned();
        // A meta package depends on the concrete one, which depends on no other kernel image;
        // a few hops at most, bounded in case of a loop.
        for _ in 0..4 {
            let record = self.show(&name)?;
            if let Some(next) = dependency(&record, "linux-image-") {
                name = next;
                continue;
            }
            let version = field(&record, "Version")
                .with_context(|| format!("{name} has no Version in its record"))?;
            let mut debs = vec![(name.clone(), version.clone())];
            for prefix in ["linux-binary-", "linux-base-"] {
                if let Some(part) = dependency(&record, prefix) {
                    let part_version = field(&self.show(&part)?, "Version")
                        .with_context(|| format!("{part} has no Version in its record"))?;
                    debs.push((part, part_version));
                }
            }
            return Ok(Resolved { package: name, version, debs });
        }
        bail!("{package} resolves through more than four linux-image packages")
    }

    /// Downloads `package`=`version` into `dir` unless it is there; returns the .deb.
    pub fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        let deb = dir.join(deb_file_name(package, version));
        if deb.exists() {
            return Ok(deb);
        }
        fs::create_dir_all(dir)?;
        eprintln!("xtask: downloading {package} {version}");
        let status = self
            .command("apt-get")
            .args(["download", "-qq", &format!("{package}={version}")])
            .current_dir(dir)
            .status()
            .context("cannot run apt-get")?;
        ensure!(
            status.success() && deb.exists(),
            "`apt-get download {package}={version}` failed ({status}); if the mirror no longer \
             has it, fetch new package lists with --refresh"
        );
        Ok(deb)
    }
}

/// The private source list of `suite`: a release with its updates and security updates; a
/// suite that has none (`sid`, `trixie-backports`) alone.
fn sources_list(suite: &str) -> String {
    let mut list = format!(
        "# Written by `cargo xtask vm`: kernels only, never installed.\n\
         deb [signed-by={KEYRING}] {MIRROR} {suite} main\n"
    );
    if !suite.contains('-') && !["sid", "unstable", "experimental"].contains(&suite) {
        let _ = write!(
            list,
            "deb [signed-by={KEYRING}] {MIRROR} {suite}-updates main\n\
             deb [signed-by={KEYRING}] {SECURITY_MIRROR} {suite}-security main\n"
        );
    }
    list
}

/// apt options for a private state under `dir`. The host's apt.conf.d is still read (a proxy
/// set there is needed here too); its sources, preferences, lists, cache and dpkg status are
/// not.
fn apt_options(dir: &Path) -> Vec<String> {
    let d = dir.display();
    [
        format!("Dir::State={d}/state"),
        format!("Dir::State::status={d}/state/status"),
        format!("Dir::Cache={d}/cache"),
        format!("Dir::Etc::SourceList={d}/etc/sources.list"),
        "Dir::Etc::SourceParts=/dev/null".to_owned(),
        "Dir::Etc::Preferences=/dev/null".to_owned(),
        "Dir::Etc::PreferencesParts=/dev/null".to_owned(),
        // Downloads land in directories of the user running xtask: no `_apt` sandbox user.
        "APT::Sandbox::User=root".to_owned(),
        // Package lists only: no translations or AppStream metadata.
        "Acquire::Languages=none".to_owned(),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_owned(),
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".to_owned(),
        "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false".to_owned(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_owned(), o])
    .collect()
}

/// A field of a deb822 record.
fn field(record: &str, name: &str) -> Option<String> {
    record
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// The first package named `prefix…` that a record depends on, if any.
fn dependency(record: &str, prefix: &str) -> Option<String> {
    let depends = field(record, "Depends")?;
    depends
        .split(',')
        .filter_map(|d| d.split('|').next()?.split_whitespace().next())
        .find(|d| d.starts_with(prefix))
        .map(str::to_owned)
}

/// The file `apt-get download` writes: `name_version_arch.deb`, the epoch's colon as `%3a`.
fn deb_file_name(package: &str, version: &str) -> String {
    format!("{package}_{}_{}.deb", version.replace(':', "%3a"), deb_arch())
}

fn deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Extracts the kernel image and its config from `debs` into `into` (once) and reads them:
/// `/boot/vmlinuz-*` and `/boot/config-*`, or, since Debian 14, `/usr/lib/modules/*/vmlinuz`
/// and `…/config`. Nothing else (the modules are not needed: see the module's doc).
pub fn unpack(
    spec: KernelSpec,
    resolved: Resolved,
    debs: &[PathBuf],
    into: &Path,
) -> Result<Kernel> {
    if find(into, "vmlinuz").is_none() || find(into, "config").is_none() {
        fs::create_dir_all(into)?;
        for deb in debs {
            let members = tar_of(deb, &["-t"], into)?;
            let wanted: Vec<&str> = members.lines().filter(|m| wanted_member(m)).collect();
            if !wanted.is_empty() {
                tar_of(deb, &[&["-x"][..], &wanted].concat(), into)?;
            }
        }
    }
    let what = || debs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    let vmlinuz = find(into, "vmlinuz").with_context(|| format!("no vmlinuz in {}", what()))?;
    let config_path =
        find(into, "config").with_context(|| format!("no kernel config in {}", what()))?;
    let config = fs::read_to_string(&config_path)?;
    Ok(Kernel { spec, package: resolved.package, version: resolved.version, vmlinuz, config })
}

/// Runs `tar ARGS` in `dir` on the file system tree of `deb`; returns what tar printed.
fn tar_of(deb: &Path, args: &[&str], dir: &Path) -> Result<String> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let stream = dpkg.stdout.take().context("no output from dpkg-deb")?;
    let tar = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .stdin(stream)
        .output()
        .context("cannot run tar")?;
    let dpkg = dpkg.wait()?;
    ensure!(
        dpkg.success() && tar.status.success(),
        "unpacking {} failed (dpkg-deb {dpkg}, tar {}): {}",
        deb.display(),
        tar.status,
        String::from_utf8_lossy(&tar.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&tar.stdout).into_owned())
}

/// Whether a member of a kernel package is its image or its config.
fn wanted_member(member: &str) -> bool {
    let path = member.trim_start_matches("./");
    if let Some(file) = path.strip_prefix("boot/") {
        return !file.contains('/')
            && (file.starts_with("vmlinuz-") || file.starts_with("config-"));
    }
    path.strip_prefix("usr/lib/modules/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, file)| file == "vmlinuz" || file == "config")
}

/// The unpacked `vmlinuz` or `config` under `into`, in either layout.
fn find(into: &Path, kind: &str) -> Option<PathBuf> {
    let entries =
        |dir: PathBuf| fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path());
    entries(into.join("boot"))
        .find(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{kind}-")))
        })
        .or_else(|| {
            entries(into.join("usr/lib/modules")).map(|d| d.join(kind)).find(|p| p.is_file())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_list_is_well_formed() {
        let mut names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
        names.dedup();
        assert_eq!(names.len(), KERNELS.len(), "kernel names are unique");
        for k in KERNELS {
            assert!(k.package.starts_with("linux-image-"), "{k:?}");
            assert!(!k.suite.is_empty() && !k.suite.contains(char::is_whitespace), "{k:?}");
        }
        assert_eq!(names, ["5.10", "6.1", "6.12"]);
    }

    #[test]
    fn kernels_are_selected_by_name_in_list_order() -> Result<()> {
        let all = select(&[])?;
        assert_eq!(all.len(), KERNELS.len());
        let some = select(&["6.12".to_owned(), "5.10".to_owned()])?;
        assert_eq!(some.iter().map(|k| k.name).collect::<Vec<_>>(), ["5.10", "6.12"]);
        let err = select(&["4.19".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("4.19") && err.contains("5.10, 6.1, 6.12"), "{err}");
        Ok(())
    }

    #[test]
    fn apt_is_pointed_at_the_private_state_only() {
        let options = apt_options(Path::new("/w/target/vm/apt/bookworm"));
        assert!(options.chunks(2).all(|pair| pair[0] == "-o"), "{options:?}");
        let values: Vec<&str> = options.chunks(2).map(|p| p[1].as_str()).collect();
        for want in [
            "Dir::State=/w/target/vm/apt/bookworm/state",
            "Dir::State::status=/w/target/vm/apt/bookworm/state/status",
            "Dir::Cache=/w/target/vm/apt/bookworm/cache",
            "Dir::Etc::SourceList=/w/target/vm/apt/bookworm/etc/sources.list",
            "Dir::Etc::SourceParts=/dev/null",
            "Dir::Etc::Preferences=/dev/null",
        ] {
            assert!(values.contains(&want), "{want} missing from {values:?}");
        }
        // Nothing of the host's state, cache or sources is named.
        assert!(
            !values.iter().any(|v| v.contains("/var/") || v.contains("/etc/apt")),
            "{values:?}"
        );
    }

    #[test]
    fn the_sources_are_the_suite_its_updates_and_security() {
        let list = sources_list("bullseye");
        let lines: Vec<&str> = list.lines().filter(|l| l.starts_with("deb ")).collect();
        assert_eq!(
            lines,
            [
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye-updates main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main",
            ]
        );
    }

    #[test]
    fn suites_without_updates_are_listed_alone() {
        for suite in ["sid", "trixie-backports"] {
            let list = sources_list(suite);
            let lines: Vec<&str> = list.lines().filter(|l| l.starts_with("deb ")).collect();
            assert_eq!(lines.len(), 1, "{list}");
            assert!(lines[0].ends_with(&format!("/debian {suite} main")), "{list}");
        }
    }

    #[test]
    fn a_meta_package_resolves_to_its_image_dependency() {
        let meta = "Package: linux-image-cloud-amd64\nVersion: 6.1.176-1\n\
                    Depends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)\nDescription: x\n";
        assert_eq!(
            dependency(meta, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-50-cloud-amd64")
        );
        // Newer meta packages name other packages first.
        let newer = "Depends: linux-base-cloud-amd64 (= 7.2.13-1), linux-image-7.2.13+deb14-cloud-amd64 (= 7.2.13-1), linux-modules-cloud-amd64 (= 7.2.13-1)\n";
        assert_eq!(
            dependency(newer, "linux-image-").as_deref(),
            Some("linux-image-7.2.13+deb14-cloud-amd64")
        );
        let concrete = "Package: linux-image-6.1.0-50-cloud-amd64\nVersion: 6.1.176-1\n\
                        Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool\n";
        assert_eq!(dependency(concrete, "linux-image-"), None);
        // Debian 14's image is split: the binary and the config are dependencies.
        let split = "Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                     linux-base-7.2.13+deb14-cloud-amd64 (= 7.2.13-1), \
                     linux-binary-7.2.13+deb14-cloud-amd64 (= 7.2.13-1)\n";
        assert_eq!(dependency(split, "linux-image-"), None);
        assert_eq!(
            dependency(split, "linux-binary-").as_deref(),
            Some("linux-binary-7.2.13+deb14-cloud-amd64")
        );
        assert_eq!(field(concrete, "Version").as_deref(), Some("6.1.176-1"));
        assert_eq!(field(concrete, "Missing"), None);
    }

    #[test]
    fn only_the_image_and_the_config_are_unpacked() {
        for yes in [
            "./boot/vmlinuz-6.1.0-50-cloud-amd64",
            "./boot/config-6.1.0-50-cloud-amd64",
            "./usr/lib/modules/7.2.13+deb14-cloud-amd64/vmlinuz",
            "./usr/lib/modules/7.2.13+deb14-cloud-amd64/config",
        ] {
            assert!(wanted_member(yes), "{yes}");
        }
        for no in [
            "./boot/",
            "./boot/System.map-6.1.0-50-cloud-amd64",
            "./lib/modules/6.1.0-50-cloud-amd64/kernel/fs/xfs/xfs.ko",
            "./usr/lib/modules/7.2.13+deb14-cloud-amd64/modules.order",
            "./usr/lib/modules/7.2.13+deb14-cloud-amd64/kernel/config",
        ] {
            assert!(!wanted_member(no), "{no}");
        }
    }

    #[test]
    fn deb_names_escape_the_epoch() {
        assert_eq!(
            deb_file_name("linux-image-6.12.118+deb12-cloud-amd64", "6.12.118-1~deb12u1"),
            format!("linux-image-6.12.118+deb12-cloud-amd64_6.12.118-1~deb12u1_{}.deb", deb_arch())
        );
        assert!(deb_file_name("x", "1:2.0").contains("_1%3a2.0_"));
    }

    #[test]
    fn only_built_in_options_count() {
        let config = "CONFIG_EXT4_FS=y\nCONFIG_VIRTIO_BLK=m\n# CONFIG_X is not set\nCONFIG_EXT4_FS_POSIX_ACL=y\n";
        assert!(builtin(config, "CONFIG_EXT4_FS"));
        assert!(!builtin(config, "CONFIG_VIRTIO_BLK"));
        assert!(!builtin(config, "CONFIG_X"));
        assert!(!builtin(config, "CONFIG_EXT4"));
    }
}
