//! tracefs event `format` files: the record layout of a classic tracepoint as this kernel
//! defines it.
//!
//! The BPF probes read tracepoint arguments at offsets, and those offsets change between kernels
//! (`kmem_cache_alloc` gained a cache `name` field in the 6.x series, which moved every field
//! after it), so they are checked against, or taken from, the running kernel's own description
//! rather than one kernel's headers. A format file looks like this
//! (tabs shown as spaces):
//!
//! ```text
//! name: kmem_cache_alloc
//! ID: 659
//! format:
//!     field:unsigned short common_type;    offset:0;    size:2;    signed:0;
//!     ...
//!     field:__data_loc char[] name;    offset:24;    size:4;    signed:0;
//!
//! print fmt: "call_site=%pS ...", ...
//! ```
//!
//! tracefs lives at `/sys/kernel/tracing` (or `/sys/kernel/debug/tracing` through debugfs) and is
//! normally readable only by root.

use std::io;
use std::path::{Path, PathBuf};

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name, without any array suffix (`comm` for `char comm[16]`).
    pub name: String,
    /// The C type as the kernel prints it, with an array suffix moved onto it:
    /// `unsigned long`, `const void *`, `char[16]`, `__data_loc char[]`.
    pub c_type: String,
    /// Byte offset from the start of the record, common fields included.
    pub offset: u32,
    /// Size in bytes. For `__data_loc` fields this is the 4-byte locator (offset in the low 16
    /// bits, length in the high 16), not the string.
    pub size: u32,
    /// Whether the kernel considers the type signed.
    pub signed: bool,
}

impl Field {
    /// Whether the field is a `__data_loc` (or `__rel_loc`) locator of variable-length data
    /// stored after the fixed fields.
    #[must_use]
    pub fn is_dynamic(&self) -> bool {
        self.c_type.starts_with("__data_loc") || self.c_type.starts_with("__rel_loc")
    }
}

/// The layout of one tracepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// The event name (`kmem_cache_alloc`).
    pub name: String,
    /// The event id, as `common_type` carries it in every record.
    pub id: u32,
    /// All fields in file order, the `common_` header fields included.
    pub fields: Vec<Field>,
}

impl Format {
    /// The field called `name`, if this kernel's tracepoint has one.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.name == name)
    }
}

/// Why a format file could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The event does not exist on this kernel (or tracefs is not mounted at the given root);
    /// separate so callers can fall back.
    #[error("no tracepoint format at {}", path.display())]
    NotFound {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tracepoint format line {line}: {problem}")]
    Line { line: usize, problem: LineProblem },
    #[error("tracepoint format has no {0:?} line")]
    Missing(&'static str),
}

/// What was wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("{key} is not a number: {value:?}")]
    NotANumber { key: &'static str, value: String },
    #[error("field description lacks {0:?}")]
    MissingAttribute(&'static str),
    #[error("cannot split {0:?} into a type and a name")]
    BadDeclaration(String),
    #[error("{0:?} is not a header or field line")]
    Unexpected(String),
}

/// Parses the text of an event's `format` file. Everything from `print fmt:` on is ignored.
pub fn parse_format(text: &str) -> Result<Format, FormatError> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();

    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = |problem| FormatError::Line { line: index + 1, problem };
        if line.starts_with("print fmt:") {
            // The print format is C with arbitrary strings in it; nothing after it is layout.
            break;
        }
        if line.is_empty() || line == "format:" {
            continue;
        }
        if let Some(value) = line.strip_prefix("name:") {
            name = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("ID:") {
            let value = value.trim();
            let parsed = value
                .parse()
                .map_err(|_| at(LineProblem::NotANumber { key: "ID", value: value.to_owned() }))?;
            id = Some(parsed);
        } else if line.starts_with("field:") {
            fields.push(parse_field(line).map_err(at)?);
        } else {
            return Err(at(LineProblem::Unexpected(line.to_owned())));
        }
    }

    Ok(Format {
        name: name.ok_or(FormatError::Missing("name"))?,
        id: id.ok_or(FormatError::Missing("ID"))?,
        fields,
    })
}

/// Reads and parses `tracefs/events/<system>/<event>/format`.
pub fn read_format(tracefs: &Path, system: &str, event: &str) -> Result<Format, FormatError> {
    let path = tracefs.join("events").join(system).join(event).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            FormatError::NotFound { path: path.clone(), source }
        } else {
            FormatError::Io { path: path.clone(), source }
        }
    })?;
    parse_format(&text)
}

/// Parses `field:<declaration>;\toffset:<n>;\tsize:<n>;\tsigned:<0|1>;`.
fn parse_field(line: &str) -> Result<Field, LineProblem> {
    let mut declaration = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = None;
    // The declaration never contains ';' (it is a single C declarator), so splitting on it is
    // safe; attributes may come in any order and unknown ones are ignored for forward
    // compatibility.
    for part in line.split(';').map(str::trim).filter(|part| !part.is_empty()) {
        let Some((key, value)) = part.split_once(':') else { continue };
        let value = value.trim();
        match key.trim() {
            "field" => declaration = Some(value),
            "offset" => offset = Some(number("offset", value)?),
            "size" => size = Some(number("size", value)?),
            "signed" => signed = Some(number("signed", value)? != 0),
            _ => {}
        }
    }
    let declaration = declaration.ok_or(LineProblem::MissingAttribute("field"))?;
    let (c_type, name) = split_declaration(declaration)
        .ok_or_else(|| LineProblem::BadDeclaration(declaration.to_owned()))?;
    Ok(Field {
        name,
        c_type,
        offset: offset.ok_or(LineProblem::MissingAttribute("offset"))?,
        size: size.ok_or(LineProblem::MissingAttribute("size"))?,
        signed: signed.ok_or(LineProblem::MissingAttribute("signed"))?,
    })
}

fn number(key: &'static str, value: &str) -> Result<u32, LineProblem> {
    value.parse().map_err(|_| LineProblem::NotANumber { key, value: value.to_owned() })
}

/// Splits a C declaration into (type, name): `const void * ptr` → (`const void *`, `ptr`),
/// `char comm[16]` → (`char[16]`, `comm`), `__data_loc char[] name` → (`__data_loc char[]`,
/// `name`). The name is the identifier at the end once an array suffix is taken off.
fn split_declaration(declaration: &str) -> Option<(String, String)> {
    let declaration = declaration.trim();
    let (declarator, array) = match declaration.strip_suffix(']') {
        Some(_) => declaration.split_at(declaration.rfind('[')?),
        None => (declaration, ""),
    };
    let declarator = declarator.trim_end();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let name_start = declarator
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_ident(*c))
        .last()
        .map(|(index, _)| index)?;
    let (c_type, name) = declarator.split_at(name_start);
    let c_type = c_type.trim_end();
    if c_type.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((format!("{c_type}{array}"), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($path:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/testdata/tracefs/",
                $path,
                "/format"
            ))
        };
    }

    const KMEM_CACHE_ALLOC: &str = fixture!("kmem/kmem_cache_alloc");
    const KMEM_CACHE_FREE: &str = fixture!("kmem/kmem_cache_free");
    const KMALLOC: &str = fixture!("kmem/kmalloc");
    const KFREE: &str = fixture!("kmem/kfree");
    const SCHED_SWITCH: &str = fixture!("sched/sched_switch");

    /// `(name, c_type, offset, size, signed)` for terse tables.
    fn layout(format: &Format) -> Vec<(&str, &str, u32, u32, bool)> {
        format
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.c_type.as_str(), f.offset, f.size, f.signed))
            .collect()
    }

    const COMMON: [(&str, &str, u32, u32, bool); 4] = [
        ("common_type", "unsigned short", 0, 2, false),
        ("common_flags", "unsigned char", 2, 1, false),
        ("common_preempt_count", "unsigned char", 3, 1, false),
        ("common_pid", "int", 4, 4, true),
    ];

    fn with_common<'a>(
        rest: &[(&'a str, &'a str, u32, u32, bool)],
    ) -> Vec<(&'a str, &'a str, u32, u32, bool)> {
        COMMON.iter().chain(rest).copied().collect()
    }

    #[test]
    fn kmem_cache_alloc_6_18() {
        let format = parse_format(KMEM_CACHE_ALLOC).expect("parses");
        assert_eq!(format.name, "kmem_cache_alloc");
        assert_eq!(format.id, 659);
        assert_eq!(
            layout(&format),
            with_common(&[
                ("call_site", "unsigned long", 8, 8, false),
                ("ptr", "const void *", 16, 8, false),
                ("name", "__data_loc char[]", 24, 4, false),
                ("bytes_req", "size_t", 32, 8, false),
                ("bytes_alloc", "size_t", 40, 8, false),
                ("gfp_flags", "unsigned long", 48, 8, false),
                ("node", "int", 56, 4, true),
                ("accounted", "bool", 60, 1, false),
            ])
        );
        let name = format.field("name").expect("name field");
        assert!(name.is_dynamic());
        assert!(!format.field("ptr").expect("ptr").is_dynamic());
        assert_eq!(format.field("no_such_field"), None);
    }

    #[test]
    fn kmem_cache_free_6_18() {
        let format = parse_format(KMEM_CACHE_FREE).expect("parses");
        assert_eq!((format.name.as_str(), format.id), ("kmem_cache_free", 656));
        assert_eq!(
            layout(&format),
            with_common(&[
                ("call_site", "unsigned long", 8, 8, false),
                ("ptr", "const void *", 16, 8, false),
                ("name", "__data_loc char[]", 24, 4, false),
            ])
        );
    }

    #[test]
    fn kmalloc_6_18() {
        let format = parse_format(KMALLOC).expect("parses");
        assert_eq!((format.name.as_str(), format.id), ("kmalloc", 658));
        assert_eq!(
            layout(&format),
            with_common(&[
                ("call_site", "unsigned long", 8, 8, false),
                ("ptr", "const void *", 16, 8, false),
                ("bytes_req", "size_t", 24, 8, false),
                ("bytes_alloc", "size_t", 32, 8, false),
                ("gfp_flags", "unsigned long", 40, 8, false),
                ("node", "int", 48, 4, true),
            ])
        );
    }

    #[test]
    fn kfree_6_18() {
        let format = parse_format(KFREE).expect("parses");
        assert_eq!((format.name.as_str(), format.id), ("kfree", 657));
        assert_eq!(
            layout(&format),
            with_common(&[
                ("call_site", "unsigned long", 8, 8, false),
                ("ptr", "const void *", 16, 8, false),
            ])
        );
    }

    #[test]
    fn arrays_move_their_suffix_onto_the_type() {
        let format = parse_format(SCHED_SWITCH).expect("parses");
        let prev_comm = format.field("prev_comm").expect("prev_comm");
        assert_eq!(
            (prev_comm.c_type.as_str(), prev_comm.offset, prev_comm.size),
            ("char[16]", 8, 16)
        );
        let next_comm = format.field("next_comm").expect("next_comm");
        assert_eq!((next_comm.offset, next_comm.size), (40, 16));
        let prev_state = format.field("prev_state").expect("prev_state");
        assert_eq!(
            (prev_state.c_type.as_str(), prev_state.offset, prev_state.signed),
            ("long", 32, true)
        );
    }

    #[test]
    fn declarations() {
        let split = |d: &str| split_declaration(d);
        let pair = |t: &str, n: &str| Some((t.to_owned(), n.to_owned()));
        assert_eq!(split("unsigned long args[6]"), pair("unsigned long[6]", "args"));
        assert_eq!(split("__rel_loc char[] msg"), pair("__rel_loc char[]", "msg"));
        assert_eq!(split("char buf[]"), pair("char[]", "buf"));
        assert_eq!(split("const void *ptr"), pair("const void *", "ptr"));
        assert_eq!(split("struct foo bar"), pair("struct foo", "bar"));
        assert_eq!(split("name"), None);
        assert_eq!(split("int"), None);
        assert_eq!(split("int x]"), None);
        assert_eq!(split("int 9lives"), None);
        assert_eq!(split(""), None);
    }

    #[test]
    fn bad_numbers_name_the_line() {
        let text = "name: e\nID: 1\nformat:\n\tfield:int x;\toffset:zero;\tsize:4;\tsigned:1;\n";
        let err = parse_format(text).unwrap_err();
        assert!(
            matches!(
                &err,
                FormatError::Line {
                    line: 4,
                    problem: LineProblem::NotANumber { key: "offset", .. }
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("tracepoint format line 4:"), "{err}");
        assert!(matches!(
            parse_format("name: e\nID: x\n").unwrap_err(),
            FormatError::Line { line: 2, problem: LineProblem::NotANumber { key: "ID", .. } }
        ));
    }

    #[test]
    fn short_field_lines_are_rejected() {
        let text = "name: e\nID: 1\nformat:\n\tfield:int x;\toffset:0;\tsize:4;\n";
        assert!(matches!(
            parse_format(text).unwrap_err(),
            FormatError::Line { line: 4, problem: LineProblem::MissingAttribute("signed") }
        ));
        let text = "name: e\nID: 1\nformat:\n\tfield:x;\toffset:0;\tsize:4;\tsigned:0;\n";
        assert!(matches!(
            parse_format(text).unwrap_err(),
            FormatError::Line { problem: LineProblem::BadDeclaration(_), .. }
        ));
    }

    #[test]
    fn missing_headers_and_stray_lines() {
        assert!(matches!(parse_format("ID: 1\n").unwrap_err(), FormatError::Missing("name")));
        assert!(matches!(parse_format("name: e\n").unwrap_err(), FormatError::Missing("ID")));
        assert!(matches!(parse_format("").unwrap_err(), FormatError::Missing("name")));
        assert!(matches!(
            parse_format("name: e\nID: 1\nwhat is this\n").unwrap_err(),
            FormatError::Line { line: 3, problem: LineProblem::Unexpected(_) }
        ));
        // Anything goes after "print fmt:".
        let format =
            parse_format("name: e\nID: 1\nprint fmt: \"x\"\nfield: garbage\n").expect("parses");
        assert!(format.fields.is_empty());
    }

    #[test]
    fn reads_fixture_tree() {
        // The fixtures sit in testdata/tracefs/<system>/<event>; an `events` symlink in a temp
        // dir makes that a tracefs root.
        let root = std::env::temp_dir().join(format!("slabtrace-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("mkdir");
        let link = root.join("events");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tracefs"), &link)
            .expect("symlink");
        let alloc = read_format(&root, "kmem", "kmem_cache_alloc");
        let missing = read_format(&root, "kmem", "no_such_event");
        let _ = std::fs::remove_dir_all(&root);

        assert_eq!(alloc.expect("reads").field("accounted").map(|f| f.offset), Some(60));
        let err = missing.unwrap_err();
        assert!(matches!(err, FormatError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("events/kmem/no_such_event/format"), "{err}");
    }

    #[test]
    fn reads_real_tracefs() {
        let root = Path::new("/sys/kernel/tracing");
        match read_format(root, "kmem", "kmem_cache_alloc") {
            Ok(format) => {
                assert_eq!(format.name, "kmem_cache_alloc");
                assert!(format.field("ptr").is_some());
            }
            Err(FormatError::NotFound { .. }) => {
                eprintln!("skipped: tracefs not mounted at {}", root.display());
            }
            Err(err) => panic!("{err}"),
        }
    }
}
