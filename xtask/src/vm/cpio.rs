//! A writer of `newc` cpio archives, the format the kernel unpacks an initramfs from
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`): a 110-byte ASCII header per
//! entry (magic `070701`, thirteen 8-digit hex fields), the NUL-terminated name, the data, each
//! padded to four bytes, and a `TRAILER!!!` entry at the end. Uncompressed: qemu hands the
//! kernel the archive in memory, so compressing it would only cost time on both sides.
//!
//! Parent directories are written before their entries (the kernel creates each entry with one
//! `mkdir`/`open`, no `-p`), once each, and an entry written twice is an error, since the
//! kernel would silently keep the later one.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{self, Write},
    path::Path,
};

use anyhow::{Context as _, Result, bail, ensure};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Writes entries to `out`; [`Writer::finish`] writes the trailer.
pub struct Writer<W: Write> {
    out: W,
    /// Bytes written so far, for the padding.
    offset: u64,
    /// The next inode number: each entry its own, as the kernel only uses them for hard links.
    ino: u32,
    /// Every path written, without a leading `/`.
    written: BTreeSet<String>,
}

/// What a header describes besides the name.
struct Header {
    mode: u32,
    size: u64,
    rdev: (u32, u32),
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self { out, offset: 0, ino: 1, written: BTreeSet::new() }
    }

    /// A directory (and its missing parents).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let path = self.begin(path)?;
        self.entry(&path, &Header { mode: S_IFDIR | mode, size: 0, rdev: (0, 0) }, &[])
    }

    /// A directory, unless it was written already.
    fn ensure_dir(&mut self, path: &str) -> Result<()> {
        if self.written.contains(path) { Ok(()) } else { self.dir(path, 0o755) }
    }

    /// A regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let path = self.begin(path)?;
        let header = Header { mode: S_IFREG | mode, size: data.len() as u64, rdev: (0, 0) };
        self.entry(&path, &header, data)
    }

    /// A regular file with the contents of `source`, streamed, with `source`'s permissions.
    pub fn file_from(&mut self, path: &str, source: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.begin(path)?;
        let mut file =
            fs::File::open(source).with_context(|| format!("opening {}", source.display()))?;
        let meta = file.metadata()?;
        ensure!(meta.is_file(), "{} is not a regular file", source.display());
        let header = Header {
            mode: S_IFREG | (meta.permissions().mode() & 0o7777),
            size: meta.len(),
            rdev: (0, 0),
        };
        self.header(&path, &header)?;
        let copied = io::copy(&mut file, &mut self.out)?;
        ensure!(copied == meta.len(), "{} changed while it was archived", source.display());
        self.offset += copied;
        self.pad()
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let path = self.begin(path)?;
        let header = Header { mode: S_IFLNK | 0o777, size: target.len() as u64, rdev: (0, 0) };
        self.entry(&path, &header, target.as_bytes())
    }

    /// A character device node (`/dev/console` must exist before the kernel starts init).
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        let path = self.begin(path)?;
        self.entry(&path, &Header { mode: S_IFCHR | mode, size: 0, rdev: (major, minor) }, &[])
    }

    /// Whether `path` was written.
    pub fn contains(&self, path: &str) -> bool {
        self.written.contains(path.trim_start_matches('/'))
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.entry("TRAILER!!!", &Header { mode: 0, size: 0, rdev: (0, 0) }, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Normalises `path`, refuses a second entry of it, and writes its missing parents.
    fn begin(&mut self, path: &str) -> Result<String> {
        let path = path.trim_start_matches('/').trim_end_matches('/').to_owned();
        if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            bail!("{path:?} is not a plain relative path for the archive");
        }
        if self.written.contains(&path) {
            bail!("{path} is in the archive twice");
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.ensure_dir(parent)?;
        }
        self.written.insert(path.clone());
        Ok(path)
    }

    fn entry(&mut self, path: &str, header: &Header, data: &[u8]) -> Result<()> {
        self.header(path, header)?;
        self.out.write_all(data)?;
        self.offset += data.len() as u64;
        self.pad()
    }

    fn header(&mut self, path: &str, h: &Header) -> Result<()> {
        let size = u32::try_from(h.size).context("newc archives hold files below 4 GiB")?;
        let name_size = u32::try_from(path.len() + 1)?;
        let nlink = if h.mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields =
            [self.ino, h.mode, 0, 0, nlink, 0, size, 0, 0, h.rdev.0, h.rdev.1, name_size, 0];
        self.ino += 1;
        let mut text = String::with_capacity(110 + path.len() + 1);
        text.push_str("070701");
        for field in fields {
            let _ = write!(text, "{field:08x}");
        }
        text.push_str(path);
        text.push('\0');
        self.out.write_all(text.as_bytes())?;
        self.offset += text.len() as u64;
        self.pad()
    }

    fn pad(&mut self) -> Result<()> {
        let padding = (4 - self.offset % 4) % 4;
        self.out.write_all(&[0; 3][..usize::try_from(padding)?])?;
        self.offset += padding;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, size, rdev major, minor, data) of every entry, read back.
    fn parse(mut bytes: &[u8]) -> Vec<(String, u32, u32, u32, u32, Vec<u8>)> {
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).unwrap(), 16)
                .unwrap()
        };
        let pad = |n: usize| n.div_ceil(4) * 4;
        let mut entries = Vec::new();
        let total = bytes.len();
        loop {
            let at = total - bytes.len();
            assert_eq!(at % 4, 0, "entries start on four-byte boundaries");
            assert_eq!(&bytes[..6], b"070701");
            let (mode, size, major, minor, name_size) = (
                field(bytes, 1),
                field(bytes, 6),
                field(bytes, 9),
                field(bytes, 10),
                field(bytes, 11),
            );
            let name_size = name_size as usize;
            let name = String::from_utf8(bytes[110..110 + name_size - 1].to_vec()).unwrap();
            assert_eq!(bytes[110 + name_size - 1], 0, "names end with NUL");
            let data_at = pad(at + 110 + name_size) - at;
            let data = bytes[data_at..data_at + size as usize].to_vec();
            bytes = &bytes[pad(at + data_at + size as usize) - at..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty(), "nothing after the trailer");
                return entries;
            }
            entries.push((name, mode, size, major, minor, data));
        }
    }

    #[test]
    fn entries_round_trip_with_parents_first_and_padding() -> Result<()> {
        let mut w = Writer::new(Vec::new());
        w.char_device("dev/console", 0o600, 5, 1)?;
        w.file("/vm/plan", 0o644, b"test a b\n")?;
        w.file("vm/bin/x", 0o755, b"12345")?;
        w.symlink("lib64", "usr/lib64")?;
        w.dir("tmp", 0o1777)?;
        let entries = parse(&w.finish()?);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "dev/console", "vm", "vm/plan", "vm/bin", "vm/bin/x", "lib64", "tmp"]
        );
        let get = |n: &str| entries.iter().find(|e| e.0 == n).unwrap();
        assert_eq!(get("dev").1, S_IFDIR | 0o755);
        assert_eq!(
            (get("dev/console").1, get("dev/console").3, get("dev/console").4),
            (S_IFCHR | 0o600, 5, 1)
        );
        assert_eq!(
            (get("vm/plan").1, get("vm/plan").5.as_slice()),
            (S_IFREG | 0o644, &b"test a b\n"[..])
        );
        assert_eq!(get("vm/bin/x").5, b"12345");
        assert_eq!(
            (get("lib64").1, get("lib64").5.as_slice()),
            (S_IFLNK | 0o777, &b"usr/lib64"[..])
        );
        assert_eq!(get("tmp").1, S_IFDIR | 0o1777);
        Ok(())
    }

    #[test]
    fn the_header_is_the_documented_one() -> Result<()> {
        let mut w = Writer::new(Vec::new());
        w.file("init", 0o755, b"#!")?;
        let bytes = w.finish()?;
        let header = std::str::from_utf8(&bytes[..110])?;
        let fields = [
            "070701", "00000001", // magic, ino
            "000081ed", "00000000", "00000000", "00000001", // mode 0100755, uid, gid, nlink
            "00000000", "00000002", // mtime, size
            "00000000", "00000000", "00000000", "00000000", // dev and rdev major:minor
            "00000005", "00000000", // name size ("init" and NUL), check
        ];
        assert_eq!(header, fields.concat());
        assert_eq!(&bytes[110..116], b"init\0\0", "name, NUL, padded to 116");
        assert_eq!(&bytes[116..120], b"#!\0\0", "data padded to 120");
        Ok(())
    }

    #[test]
    fn a_path_twice_or_a_path_that_climbs_is_refused() -> Result<()> {
        let mut w = Writer::new(Vec::new());
        w.file("a/b", 0o644, b"")?;
        assert!(w.file("a/b", 0o644, b"").is_err());
        assert!(w.dir("a", 0o755).is_err(), "a was written as b's parent");
        assert!(w.file("a/../etc", 0o644, b"").is_err());
        assert!(w.file("", 0o644, b"").is_err());
        assert!(w.contains("/a/b") && !w.contains("a/c"));
        Ok(())
    }

    #[test]
    fn a_file_is_streamed_with_its_permissions() -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let source = dir.join("tool");
        fs::write(&source, b"\x7fELF....")?;
        fs::set_permissions(&source, fs::Permissions::from_mode(0o750))?;
        let mut w = Writer::new(Vec::new());
        w.file_from("usr/bin/tool", &source)?;
        let entries = parse(&w.finish()?);
        fs::remove_dir_all(&dir)?;
        let tool = entries.iter().find(|e| e.0 == "usr/bin/tool").unwrap();
        assert_eq!((tool.1, tool.5.as_slice()), (S_IFREG | 0o750, &b"\x7fELF...."[..]));
        Ok(())
    }
}
