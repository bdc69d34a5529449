//! A minimal reader of the kernel's raw BTF (`/sys/kernel/btf/vmlinux`): struct member offsets
//! and sizes, enumerator values, and the parameter types of raw tracepoints.
//!
//! Rust BPF programs have no CO-RE relocations, so slabtrace looks the running kernel's layout up
//! here at start-up and hands the numbers to the BPF side as load-time constants. The format is
//! the one in the kernel's `Documentation/bpf/btf.rst` (version 1, kinds 1..=19 as of Linux
//! 6.18): a header, a type section and a string section. [`Btf::parse`] is pure and decodes the
//! whole type section once, indexing struct, union and typedef names and every enumerator, so
//! the lookups afterwards are hash-map hits; only [`Btf::from_file`] touches the filesystem.
//! Both byte orders are read, chosen by how the magic `0xeB9F` is laid out.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The magic number at the start of every BTF blob.
const BTF_MAGIC: u16 = 0xeb9f;
/// The only BTF version there is.
const BTF_VERSION: u8 = 1;
/// Length of the version 1 header; newer writers may append fields, which this reader skips.
const HEADER_LEN: usize = 24;
/// `struct btf_type`: `name_off`, `info`, `size`/`type`.
const TYPE_HEADER_LEN: usize = 12;
/// Nesting that valid C never reaches; bounds the recursion over corrupt, self-referencing
/// type graphs.
const MAX_DEPTH: usize = 64;
/// Types visited by one lookup or spelling; a depth bound alone still lets a corrupt type that
/// refers to itself several times branch exponentially.
const MAX_STEPS: usize = 4096;

/// Why a BTF blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not BTF: the magic is {found:#06x}, expected 0xeb9f")]
    BadMagic { found: u16 },
    #[error("unsupported BTF version {found}, only version 1 is known")]
    UnsupportedVersion { found: u8 },
    #[error("BTF header claims {found} bytes, less than the {HEADER_LEN} of a version 1 header")]
    HeaderTooShort { found: u32 },
    #[error(
        "BTF truncated: the {what} at byte {offset} needs {needed} bytes, {available} are left"
    )]
    Truncated { what: &'static str, offset: usize, needed: usize, available: usize },
    #[error("unknown BTF kind {kind} at type id {type_id}")]
    UnknownKind { kind: u32, type_id: u32 },
    #[error("BTF has more types than fit a 32-bit type id")]
    TooManyTypes,
    #[error("BTF name at string offset {offset} (type id {type_id}) is not a valid string")]
    BadString { offset: u32, type_id: u32 },
}

/// Byte order of the blob, decided by the magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

/// Bounds-checked reads from the blob; every failure names what was being read and where.
struct Reader<'a> {
    bytes: &'a [u8],
    endian: Endian,
}

impl Reader<'_> {
    fn slice(&self, what: &'static str, offset: usize, len: usize) -> Result<&[u8], BtfError> {
        let truncated = || BtfError::Truncated {
            what,
            offset,
            needed: len,
            available: self.bytes.len().saturating_sub(offset),
        };
        let end = offset.checked_add(len).ok_or_else(truncated)?;
        self.bytes.get(offset..end).ok_or_else(truncated)
    }

    fn u32(&self, what: &'static str, offset: usize) -> Result<u32, BtfError> {
        let raw: [u8; 4] = self
            .slice(what, offset, 4)?
            .try_into()
            .map_err(|_| BtfError::Truncated { what, offset, needed: 4, available: 0 })?;
        Ok(match self.endian {
            Endian::Little => u32::from_le_bytes(raw),
            Endian::Big => u32::from_be_bytes(raw),
        })
    }
}

/// Qualifiers that wrap another type without changing its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Qualifier {
    Const,
    Volatile,
    Restrict,
    /// `btf_type_tag` annotations such as `__user` or `address_space(1)`; invisible in C.
    TypeTag,
}

/// One decoded type. Names are offsets into the string section; member and parameter lists are
/// ranges into [`Btf::members`].
#[derive(Clone, Debug)]
enum Type {
    /// Type id 0.
    Void,
    Int {
        name: u32,
        size: u32,
        /// Bit offset and width from the INT encoding; old (pre-`kind_flag`) BTF describes
        /// bitfields this way.
        bits_offset: u32,
        nr_bits: u32,
    },
    Ptr {
        target: u32,
    },
    Array {
        elem: u32,
        nelems: u32,
    },
    Composite {
        name: u32,
        size: u32,
        is_union: bool,
        members: Range<usize>,
    },
    Enum {
        name: u32,
        size: u32,
    },
    Fwd {
        name: u32,
        is_union: bool,
    },
    Typedef {
        name: u32,
        target: u32,
    },
    Qualified {
        qualifier: Qualifier,
        target: u32,
    },
    FuncProto {
        ret: u32,
        params: Range<usize>,
    },
    Float {
        name: u32,
        size: u32,
    },
    /// A kernel function, pointing to its `FUNC_PROTO`.
    Func {
        name: u32,
        proto: u32,
    },
    /// `VAR`, `DATASEC` and `DECL_TAG`: decoded only far enough to skip them.
    Other,
}

/// Which name index a type goes into.
#[derive(Clone, Copy)]
enum IndexKind {
    Composite,
    Typedef,
}

/// A struct/union member or a function parameter (whose offsets are zero).
#[derive(Clone, Copy, Debug)]
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
    /// Non-zero for a bitfield declared through the struct's `kind_flag` encoding.
    bitfield_size: u32,
}

/// The parsed BTF of one kernel (or any raw BTF blob).
pub struct Btf {
    /// Indexed by type id; entry 0 is void.
    types: Vec<Type>,
    /// Members of every struct and union and parameters of every function prototype.
    members: Vec<Member>,
    /// The string section, NUL-separated.
    strings: Vec<u8>,
    /// Struct and union names → type ids, in id order (deduplicated BTF can still hold several
    /// definitions under one name).
    composites: HashMap<Box<str>, Vec<u32>>,
    /// Typedef names → type ids, in id order.
    typedefs: HashMap<Box<str>, Vec<u32>>,
    /// Enumerator names → values, across all ENUM and ENUM64 types; the first definition wins.
    enumerators: HashMap<Box<str>, i64>,
    /// Pointers carry no size in BTF; like libbpf, take it from `long`.
    ptr_size: u32,
}

impl fmt::Debug for Btf {
    // The derived form would print megabytes of tables.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .field("strings_bytes", &self.strings.len())
            .field("ptr_size", &self.ptr_size)
            .finish_non_exhaustive()
    }
}

/// What the header says about where the sections are.
struct Header {
    endian: Endian,
    types: Range<usize>,
    strings: Range<usize>,
}

fn parse_header(bytes: &[u8]) -> Result<Header, BtfError> {
    let endian = match bytes {
        [a, b, ..] => match u16::from_le_bytes([*a, *b]) {
            BTF_MAGIC => Endian::Little,
            swapped if swapped.swap_bytes() == BTF_MAGIC => Endian::Big,
            found => return Err(BtfError::BadMagic { found }),
        },
        _ => {
            return Err(BtfError::Truncated {
                what: "header",
                offset: 0,
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        }
    };
    let r = Reader { bytes, endian };
    let version = r.slice("header", 0, HEADER_LEN)?[2];
    if version != BTF_VERSION {
        return Err(BtfError::UnsupportedVersion { found: version });
    }
    let hdr_len = r.u32("header", 4)?;
    if (hdr_len as usize) < HEADER_LEN {
        return Err(BtfError::HeaderTooShort { found: hdr_len });
    }
    let section = |what: &'static str, off_at: usize| -> Result<Range<usize>, BtfError> {
        let off = r.u32("header", off_at)? as usize;
        let len = r.u32("header", off_at + 4)? as usize;
        let start = (hdr_len as usize).saturating_add(off);
        r.slice(what, start, len)?;
        Ok(start..start + len)
    };
    Ok(Header {
        endian,
        types: section("type section", 8)?,
        strings: section("string section", 16)?,
    })
}

/// Appends `count` members or parameters of `entry_len` bytes each, read at `at`.
fn read_members(
    r: &Reader<'_>,
    at: usize,
    count: usize,
    entry_len: usize,
    kind_flag: bool,
    out: &mut Vec<Member>,
) -> Result<Range<usize>, BtfError> {
    r.slice("member list", at, count.saturating_mul(entry_len))?;
    let start = out.len();
    for i in 0..count {
        let base = at + i * entry_len;
        let name = r.u32("member", base)?;
        let type_id = r.u32("member", base + 4)?;
        let raw_offset = if entry_len == 12 { r.u32("member", base + 8)? } else { 0 };
        // With kind_flag the offset packs the bitfield size into its high byte.
        let (bit_offset, bitfield_size) =
            if kind_flag { (raw_offset & 0x00ff_ffff, raw_offset >> 24) } else { (raw_offset, 0) };
        out.push(Member { name, type_id, bit_offset, bitfield_size });
    }
    Ok(start..out.len())
}

/// Counts one visit against both bounds; None once either is exceeded.
fn take_step(depth: usize, steps: &mut usize) -> Option<()> {
    *steps = steps.checked_sub(1)?;
    (depth <= MAX_DEPTH).then_some(())
}

/// Looks up the NUL-terminated string at `offset`; offset 0 is the empty name.
fn string_at(strings: &[u8], offset: u32) -> Option<&str> {
    let tail = strings.get(offset as usize..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&tail[..end]).ok()
}

/// pahole copies GCC's DWARF spellings ("long unsigned int"); callers compare against the usual
/// C spelling, which is also what clang-built BTF already uses.
fn c_int_name(name: &str) -> &str {
    match name {
        "long unsigned int" => "unsigned long",
        "long int" => "long",
        "long long unsigned int" => "unsigned long long",
        "long long int" => "long long",
        "short unsigned int" => "unsigned short",
        "short int" => "short",
        "__int128 unsigned" => "unsigned __int128",
        other => other,
    }
}

impl Btf {
    /// Reads and parses a raw BTF file (e.g. /sys/kernel/btf/vmlinux).
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path)
            .map_err(|source| BtfError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&bytes)
    }

    /// Parses a raw BTF blob (header, type section, string section).
    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let header = parse_header(bytes)?;
        // Reads are checked against the type section's end, not the whole blob, so a type that
        // runs into the string section is reported as truncated.
        let section = Reader { bytes: &bytes[..header.types.end], endian: header.endian };
        // vmlinux averages about 44 bytes per type; reserving avoids regrowing a 100k vector.
        let mut types = Vec::with_capacity(header.types.len() / 40 + 1);
        types.push(Type::Void);
        let mut btf = Btf {
            types,
            members: Vec::new(),
            strings: bytes[header.strings].to_vec(),
            composites: HashMap::new(),
            typedefs: HashMap::new(),
            enumerators: HashMap::new(),
            ptr_size: 8,
        };
        let mut at = header.types.start;
        while at < header.types.end {
            at = btf.decode_type(&section, at)?;
        }
        btf.ptr_size = btf.long_size().unwrap_or(8);
        Ok(btf)
    }

    /// Decodes the type at byte `at`, appends it (and indexes its names), and returns where the
    /// next type starts.
    fn decode_type(&mut self, section: &Reader<'_>, at: usize) -> Result<usize, BtfError> {
        let type_id = u32::try_from(self.types.len()).map_err(|_| BtfError::TooManyTypes)?;
        let name = section.u32("type", at)?;
        let info = section.u32("type", at + 4)?;
        let size_or_type = section.u32("type", at + 8)?;
        let data = at + TYPE_HEADER_LEN;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        let size = size_or_type;
        let target = size_or_type;

        let (ty, data_len) = match kind {
            1 => {
                let encoding = section.u32("INT encoding", data)?;
                let ty = Type::Int {
                    name,
                    size,
                    bits_offset: (encoding >> 16) & 0xff,
                    nr_bits: encoding & 0xff,
                };
                (ty, 4)
            }
            2 => (Type::Ptr { target }, 0),
            3 => {
                let elem = section.u32("ARRAY", data)?;
                let nelems = section.u32("ARRAY", data + 8)?;
                (Type::Array { elem, nelems }, 12)
            }
            4 | 5 => {
                let members = read_members(section, data, vlen, 12, kind_flag, &mut self.members)?;
                self.index(IndexKind::Composite, name, type_id)?;
                let is_union = kind == 5;
                let ty = Type::Composite { name, size, is_union, members };
                (ty, vlen * 12)
            }
            6 | 19 => {
                let entry_len =
                    self.index_enumerators(section, data, vlen, kind == 19, kind_flag, type_id)?;
                (Type::Enum { name, size }, vlen * entry_len)
            }
            7 => {
                let is_union = kind_flag;
                (Type::Fwd { name, is_union }, 0)
            }
            8 => {
                self.index(IndexKind::Typedef, name, type_id)?;
                (Type::Typedef { name, target }, 0)
            }
            9 | 10 | 11 | 18 => {
                let qualifier = match kind {
                    9 => Qualifier::Volatile,
                    10 => Qualifier::Const,
                    11 => Qualifier::Restrict,
                    _ => Qualifier::TypeTag,
                };
                (Type::Qualified { qualifier, target }, 0)
            }
            // FUNC's vlen is its linkage, not a count.
            12 => (Type::Func { name, proto: target }, 0),
            13 => {
                let params = read_members(section, data, vlen, 8, false, &mut self.members)?;
                (Type::FuncProto { ret: target, params }, vlen * 8)
            }
            // VAR: linkage; DECL_TAG: component index.
            14 | 17 => (Type::Other, 4),
            // DATASEC: vlen × btf_var_secinfo.
            15 => (Type::Other, vlen * 12),
            16 => (Type::Float { name, size }, 0),
            _ => return Err(BtfError::UnknownKind { kind, type_id }),
        };
        section.slice("type data", data, data_len)?;
        self.types.push(ty);
        Ok(data + data_len)
    }

    /// Adds a named struct, union or typedef to its index; anonymous ones are not looked up.
    fn index(&mut self, kind: IndexKind, name: u32, type_id: u32) -> Result<(), BtfError> {
        if name == 0 {
            return Ok(());
        }
        let key = self.indexed_name(name, type_id)?;
        let map = match kind {
            IndexKind::Composite => &mut self.composites,
            IndexKind::Typedef => &mut self.typedefs,
        };
        map.entry(key).or_default().push(type_id);
        Ok(())
    }

    /// Records the `vlen` enumerators of an ENUM (or ENUM64) at `data`; returns the size of one
    /// entry.
    fn index_enumerators(
        &mut self,
        section: &Reader<'_>,
        data: usize,
        vlen: usize,
        is_64: bool,
        signed: bool,
        type_id: u32,
    ) -> Result<usize, BtfError> {
        let entry_len = if is_64 { 12 } else { 8 };
        section.slice("enumerator list", data, vlen.saturating_mul(entry_len))?;
        for i in 0..vlen {
            let base = data + i * entry_len;
            let name = section.u32("enumerator", base)?;
            let lo = section.u32("enumerator", base + 4)?;
            // kind_flag marks a signed enum; without it the bits are unsigned.
            let value = if is_64 {
                let hi = section.u32("enumerator", base + 8)?;
                // Unsigned values above i64::MAX keep their bit pattern.
                ((u64::from(hi) << 32) | u64::from(lo)).cast_signed()
            } else if signed {
                i64::from(lo.cast_signed())
            } else {
                i64::from(lo)
            };
            let key = self.indexed_name(name, type_id)?;
            self.enumerators.entry(key).or_insert(value);
        }
        Ok(entry_len)
    }

    /// A name that goes into an index must be a valid string; a corrupt one fails the parse
    /// rather than silently hiding the type.
    fn indexed_name(&self, offset: u32, type_id: u32) -> Result<Box<str>, BtfError> {
        self.name(offset).map(Box::from).ok_or(BtfError::BadString { offset, type_id })
    }

    /// Byte offset of `member` in the struct (or union) named `struct_name`; looks into nested
    /// anonymous struct/union members (adding their offsets). None if the struct or member is
    /// missing or the member is a bitfield / not byte aligned.
    #[must_use]
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Option<u32> {
        let (bit_offset, found) = self.find_member(struct_name, member)?;
        if self.is_bitfield(&found) || bit_offset % 8 != 0 {
            return None;
        }
        u32::try_from(bit_offset / 8).ok()
    }

    /// Size in bytes of that member's type (resolving typedefs/const/volatile), if known.
    /// None for bitfields, whose type's size is not the number of bytes they occupy.
    #[must_use]
    pub fn member_size(&self, struct_name: &str, member: &str) -> Option<u32> {
        let (_, found) = self.find_member(struct_name, member)?;
        if self.is_bitfield(&found) {
            return None;
        }
        self.size_of(found.type_id, 0)
    }

    /// Value of an enumerator by its name, across all ENUM and ENUM64 types.
    #[must_use]
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        self.enumerators.get(name).copied()
    }

    /// Parameter types of the raw tracepoint `tp`, from the typedef `btf_trace_<tp>` (a pointer
    /// to a `FUNC_PROTO` whose first parameter is the `void *` context, which is left out), each
    /// spelled the C way: `"unsigned long"`, `"const void *"`, `"struct kmem_cache *"`,
    /// `"const struct kmem_cache *"`, `"gfp_t"`, `"int"`, `"size_t"`. None if there is no such
    /// typedef (or it is not a pointer to a function prototype).
    #[must_use]
    pub fn tracepoint_args(&self, tp: &str) -> Option<Vec<String>> {
        let ids = self.typedefs.get(format!("btf_trace_{tp}").as_str())?;
        ids.iter().find_map(|&id| {
            let Some(Type::Typedef { target, .. }) = self.ty(id) else {
                return None;
            };
            let Some(Type::Ptr { target: proto }) = self.ty(*target) else {
                return None;
            };
            let Some(Type::FuncProto { params, .. }) = self.ty(*proto) else {
                return None;
            };
            let params = self.members.get(params.clone())?;
            let mut steps = MAX_STEPS;
            params.iter().skip(1).map(|p| self.param_name(p.type_id, 0, &mut steps)).collect()
        })
    }

    /// Parameter types and return type of kernel function `name`, spelled as
    /// [`Self::tracepoint_args`] spells them. None if BTF has no such function: it was inlined
    /// everywhere, or does not exist in this kernel. A linear scan: called a few times at
    /// start-up, it saves an index of every function name.
    #[must_use]
    pub fn function_args(&self, name: &str) -> Option<(Vec<String>, String)> {
        self.types.iter().find_map(|t| {
            let Type::Func { name: n, proto } = t else { return None };
            if self.name(*n) != Some(name) {
                return None;
            }
            let Some(Type::FuncProto { ret, params }) = self.ty(*proto) else {
                return None;
            };
            let mut steps = MAX_STEPS;
            let params: Option<Vec<String>> = self
                .members
                .get(params.clone())?
                .iter()
                .map(|p| self.param_name(p.type_id, 0, &mut steps))
                .collect();
            let ret = if *ret == 0 {
                "void".to_owned()
            } else {
                self.c_name(*ret, String::new(), 0, &mut steps)?
            };
            Some((params?, ret))
        })
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    fn name(&self, offset: u32) -> Option<&str> {
        string_at(&self.strings, offset)
    }

    /// The size of `long`, which is the pointer size on every architecture Linux runs on.
    fn long_size(&self) -> Option<u32> {
        self.types.iter().find_map(|t| match t {
            Type::Int { name, size, .. }
                if matches!(self.name(*name).map(c_int_name), Some("long" | "unsigned long")) =>
            {
                Some(*size)
            }
            _ => None,
        })
    }

    /// Finds `member` in the first struct or union named `struct_name` that has it, returning
    /// its absolute bit offset.
    fn find_member(&self, struct_name: &str, member: &str) -> Option<(u64, Member)> {
        self.composites
            .get(struct_name)?
            .iter()
            .find_map(|&id| self.find_in(id, member, 0, &mut { MAX_STEPS }))
    }

    /// Depth-first search through `id`'s members and its anonymous struct/union members.
    fn find_in(
        &self,
        id: u32,
        member: &str,
        depth: usize,
        steps: &mut usize,
    ) -> Option<(u64, Member)> {
        take_step(depth, steps)?;
        let Some(Type::Composite { members, .. }) = self.ty(id) else {
            return None;
        };
        for m in self.members.get(members.clone())? {
            if m.name == 0 {
                let inner = self.strip(m.type_id, true, 0)?;
                if let Some((offset, found)) = self.find_in(inner, member, depth + 1, steps) {
                    return Some((offset + u64::from(m.bit_offset), found));
                }
            } else if self.name(m.name) == Some(member) {
                return Some((u64::from(m.bit_offset), *m));
            }
        }
        None
    }

    /// Follows qualifiers (and typedefs if asked) down to the type they wrap.
    fn strip(&self, mut id: u32, typedefs: bool, mut depth: usize) -> Option<u32> {
        loop {
            match self.ty(id)? {
                Type::Qualified { target, .. } => id = *target,
                Type::Typedef { target, .. } if typedefs => id = *target,
                _ => return Some(id),
            }
            depth += 1;
            if depth > MAX_DEPTH {
                return None;
            }
        }
    }

    /// A bitfield either through the struct's `kind_flag` encoding or, in BTF written before
    /// that existed, through an INT whose encoding narrows it.
    fn is_bitfield(&self, m: &Member) -> bool {
        if m.bitfield_size != 0 {
            return true;
        }
        match self.strip(m.type_id, true, 0).and_then(|id| self.ty(id)) {
            Some(Type::Int { size, bits_offset, nr_bits, .. }) => {
                *bits_offset != 0 || u64::from(*nr_bits) != u64::from(*size) * 8
            }
            _ => false,
        }
    }

    fn size_of(&self, id: u32, depth: usize) -> Option<u32> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.ty(id)? {
            Type::Int { size, .. }
            | Type::Composite { size, .. }
            | Type::Enum { size, .. }
            | Type::Float { size, .. } => Some(*size),
            Type::Ptr { .. } => Some(self.ptr_size),
            Type::Array { elem, nelems } => self.size_of(*elem, depth + 1)?.checked_mul(*nelems),
            Type::Typedef { target, .. } | Type::Qualified { target, .. } => {
                self.size_of(*target, depth + 1)
            }
            Type::Void
            | Type::Fwd { .. }
            | Type::FuncProto { .. }
            | Type::Func { .. }
            | Type::Other => None,
        }
    }

    /// A parameter's spelling; a void parameter can only be the `...` of a variadic prototype.
    fn param_name(&self, id: u32, depth: usize, steps: &mut usize) -> Option<String> {
        if id == 0 { Some("...".to_owned()) } else { self.c_name(id, String::new(), depth, steps) }
    }

    /// Spells type `id` as a C type name, wrapped around the declarator built so far (the
    /// usual inside-out construction: `*` goes left, `[N]` and `(params)` go right).
    fn c_name(&self, id: u32, decl: String, depth: usize, steps: &mut usize) -> Option<String> {
        take_step(depth, steps)?;
        let with = |base: &str| -> String {
            if decl.is_empty() || decl.starts_with('[') {
                format!("{base}{decl}")
            } else {
                format!("{base} {decl}")
            }
        };
        let tagged = |keyword: &str, name: u32| -> Option<String> {
            let name = self.name(name)?;
            let name = if name.is_empty() { "(anon)" } else { name };
            Some(with(&format!("{keyword} {name}")))
        };
        // A pointer's pointee that is an array or function needs the `(*)` grouping.
        let grouped = |decl: String| -> String {
            if decl.starts_with('*') { format!("({decl})") } else { decl }
        };
        match self.ty(id)? {
            Type::Void => Some(with("void")),
            Type::Int { name, .. } => Some(with(c_int_name(self.name(*name)?))),
            Type::Float { name, .. } | Type::Typedef { name, .. } => Some(with(self.name(*name)?)),
            Type::Composite { name, is_union, .. } | Type::Fwd { name, is_union } => {
                tagged(if *is_union { "union" } else { "struct" }, *name)
            }
            Type::Enum { name, .. } => tagged("enum", *name),
            Type::Ptr { target } => self.c_name(*target, format!("*{decl}"), depth + 1, steps),
            Type::Array { elem, nelems } => {
                self.c_name(*elem, format!("{}[{nelems}]", grouped(decl)), depth + 1, steps)
            }
            Type::FuncProto { ret, params } => {
                let params = self.members.get(params.clone())?;
                let list = if params.is_empty() {
                    "void".to_owned()
                } else {
                    params
                        .iter()
                        .map(|p| self.param_name(p.type_id, depth + 1, steps))
                        .collect::<Option<Vec<_>>>()?
                        .join(", ")
                };
                self.c_name(*ret, format!("{}({list})", grouped(decl)), depth + 1, steps)
            }
            Type::Qualified { qualifier, target } => {
                let word = match qualifier {
                    Qualifier::Const => "const",
                    Qualifier::Volatile => "volatile",
                    Qualifier::Restrict => "restrict",
                    Qualifier::TypeTag => return self.c_name(*target, decl, depth + 1, steps),
                };
                let target_is_ptr = matches!(
                    self.strip_tags(*target, depth).and_then(|t| self.ty(t)),
                    Some(Type::Ptr { .. })
                );
                if target_is_ptr {
                    // A qualified pointer: the qualifier belongs after its `*` ("char *const").
                    let decl =
                        if decl.is_empty() { word.to_owned() } else { format!("{word} {decl}") };
                    self.c_name(*target, decl, depth + 1, steps)
                } else {
                    Some(format!("{word} {}", self.c_name(*target, decl, depth + 1, steps)?))
                }
            }
            Type::Func { .. } | Type::Other => None,
        }
    }

    /// Skips type tags only, which C cannot spell.
    fn strip_tags(&self, mut id: u32, mut depth: usize) -> Option<u32> {
        while let Type::Qualified { qualifier: Qualifier::TypeTag, target } = self.ty(id)? {
            id = *target;
            depth += 1;
            if depth > MAX_DEPTH {
                return None;
            }
        }
        Some(id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes BTF blobs: strings are interned, types are appended in id order from 1. Shared
    /// with the layout tests, which build kernels that lack what slabtrace reads.
    pub(crate) struct Builder {
        strings: Vec<u8>,
        types: Vec<u8>,
        next_id: u32,
        big_endian: bool,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Builder { strings: vec![0], types: Vec::new(), next_id: 1, big_endian: false }
        }

        fn word(&self, v: u32) -> [u8; 4] {
            if self.big_endian { v.to_be_bytes() } else { v.to_le_bytes() }
        }

        pub(crate) fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = u32::try_from(self.strings.len()).unwrap();
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn words(&mut self, ws: &[u32]) {
            for &w in ws {
                let b = self.word(w);
                self.types.extend_from_slice(&b);
            }
        }

        /// Appends a type header plus trailing words; returns the new type id.
        pub(crate) fn ty(
            &mut self,
            name: &str,
            kind: u32,
            kind_flag: bool,
            vlen: u32,
            size_or_type: u32,
            data: &[u32],
        ) -> u32 {
            let name = self.str(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            self.words(&[name, info, size_or_type]);
            self.words(data);
            self.next_id += 1;
            self.next_id - 1
        }

        pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
            self.ty(name, 1, false, 0, size, &[size * 8])
        }

        pub(crate) fn ptr(&mut self, target: u32) -> u32 {
            self.ty("", 2, false, 0, target, &[])
        }

        pub(crate) fn konst(&mut self, target: u32) -> u32 {
            self.ty("", 10, false, 0, target, &[])
        }

        pub(crate) fn typedef(&mut self, name: &str, target: u32) -> u32 {
            self.ty(name, 8, false, 0, target, &[])
        }

        /// Members as (name, type id, raw offset word).
        pub(crate) fn composite(
            &mut self,
            name: &str,
            union: bool,
            kind_flag: bool,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut data = Vec::new();
            for &(n, t, off) in members {
                data.extend([self.str(n), t, off]);
            }
            let kind = if union { 5 } else { 4 };
            self.ty(name, kind, kind_flag, u32::try_from(members.len()).unwrap(), size, &data)
        }

        pub(crate) fn func_proto(&mut self, ret: u32, params: &[u32]) -> u32 {
            let data: Vec<u32> = params.iter().flat_map(|&t| [0, t]).collect();
            self.ty("", 13, false, u32::try_from(params.len()).unwrap(), ret, &data)
        }

        pub(crate) fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&self.word(0xeb9f)[if self.big_endian { 2..4 } else { 0..2 }]);
            out.extend_from_slice(&[1, 0]);
            let type_len = u32::try_from(self.types.len()).unwrap();
            let str_len = u32::try_from(self.strings.len()).unwrap();
            for w in [24, 0, type_len, type_len, str_len] {
                out.extend_from_slice(&self.word(w));
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// The fixture most tests share: a kmem_cache-like struct, enums and a tracepoint typedef.
    fn fixture(big_endian: bool) -> Vec<u8> {
        let mut b = Builder::new();
        b.big_endian = big_endian;
        // pahole's spelling, which must come out as "unsigned long".
        let ulong = b.int("long unsigned int", 8);
        let uint = b.int("unsigned int", 4);
        let int = b.int("int", 4);
        let char_ = b.int("char", 1);
        let const_char = b.konst(char_);
        let name_ptr = b.ptr(const_char);
        let gfp_t = b.typedef("gfp_t", uint);
        let anon_union =
            b.composite("", true, false, 8, &[("lock", ulong, 0), ("rcu_word", uint, 0)]);
        let cache = b.composite(
            "kmem_cache",
            false,
            true,
            48,
            &[
                ("flags", gfp_t, 0),
                ("size", uint, 32),
                ("object_size", uint, 64),
                ("", anon_union, 128),
                ("name", name_ptr, 192),
                // 3 bits wide at bit 256: the high byte is the bitfield size.
                ("shared", uint, (3 << 24) | 256),
                ("tail", ulong, 320),
            ],
        );
        // ENUM: two values, one negative in a signed (kind_flag) enum.
        let (a, n) = (b.str("___GFP_ACCOUNT_BIT"), b.str("NEGATIVE"));
        b.ty("gfp_bits", 6, true, 2, 4, &[a, 22, n, (-5i32).cast_unsigned()]);
        let big = b.str("BIG_VALUE");
        b.ty("big", 19, false, 1, 8, &[big, 0x0000_0002, 0x0000_0001]);
        let void_ptr = b.ptr(0);
        let const_void = b.konst(0);
        let const_void_ptr = b.ptr(const_void);
        let cache_ptr = b.ptr(cache);
        let proto = b.func_proto(0, &[void_ptr, ulong, const_void_ptr, cache_ptr, gfp_t, int]);
        let proto_ptr = b.ptr(proto);
        b.typedef("btf_trace_foo", proto_ptr);
        // FUNC (kind 12, vlen = linkage 1: global) pointing to its prototype.
        let alloc_proto = b.func_proto(void_ptr, &[cache_ptr, gfp_t]);
        b.ty("kmem_cache_alloc", 12, false, 1, alloc_proto, &[]);
        let free_proto = b.func_proto(0, &[cache_ptr, void_ptr]);
        b.ty("kmem_cache_free", 12, false, 1, free_proto, &[]);
        b.build()
    }

    #[test]
    fn functions_have_their_parameters_and_return_type() {
        let btf = Btf::parse(&fixture(false)).unwrap();
        assert_eq!(
            btf.function_args("kmem_cache_alloc").unwrap(),
            (vec!["struct kmem_cache *".to_owned(), "gfp_t".to_owned()], "void *".to_owned())
        );
        assert_eq!(btf.function_args("kmem_cache_free").unwrap().1, "void");
        assert_eq!(btf.function_args("kmem_cache_alloc_node"), None);
        // A typedef or struct of that name is not a function.
        assert_eq!(btf.function_args("gfp_t"), None);
    }

    #[test]
    fn plain_members_have_byte_offsets_and_sizes() {
        let btf = Btf::parse(&fixture(false)).unwrap();
        assert_eq!(btf.member_offset("kmem_cache", "flags"), Some(0));
        assert_eq!(btf.member_offset("kmem_cache", "size"), Some(4));
        assert_eq!(btf.member_offset("kmem_cache", "object_size"), Some(8));
        assert_eq!(btf.member_offset("kmem_cache", "name"), Some(24));
        assert_eq!(btf.member_offset("kmem_cache", "tail"), Some(40));
        assert_eq!(btf.member_size("kmem_cache", "flags"), Some(4));
        assert_eq!(btf.member_size("kmem_cache", "name"), Some(8));
        assert_eq!(btf.member_size("kmem_cache", "tail"), Some(8));
    }

    #[test]
    fn anonymous_union_members_add_their_offset() {
        let btf = Btf::parse(&fixture(false)).unwrap();
        assert_eq!(btf.member_offset("kmem_cache", "lock"), Some(16));
        assert_eq!(btf.member_offset("kmem_cache", "rcu_word"), Some(16));
        assert_eq!(btf.member_size("kmem_cache", "rcu_word"), Some(4));
    }

    #[test]
    fn bitfields_and_missing_names_give_none() {
        let btf = Btf::parse(&fixture(false)).unwrap();
        assert_eq!(btf.member_offset("kmem_cache", "shared"), None);
        assert_eq!(btf.member_size("kmem_cache", "shared"), None);
        assert_eq!(btf.member_offset("kmem_cache", "nope"), None);
        assert_eq!(btf.member_offset("no_such_struct", "size"), None);
        // The anonymous union itself has no name to find it by.
        assert_eq!(btf.member_offset("kmem_cache", ""), None);
    }

    #[test]
    fn enum_and_enum64_values() {
        let btf = Btf::parse(&fixture(false)).unwrap();
        assert_eq!(btf.enum_value("___GFP_ACCOUNT_BIT"), Some(22));
        assert_eq!(btf.enum_value("NEGATIVE"), Some(-5));
        assert_eq!(btf.enum_value("BIG_VALUE"), Some(0x1_0000_0002));
        assert_eq!(btf.enum_value("MISSING"), None);
    }

    #[test]
    fn tracepoint_args_are_spelled_like_c() {
        let btf = Btf::parse(&fixture(false)).unwrap();
        assert_eq!(
            btf.tracepoint_args("foo").unwrap(),
            ["unsigned long", "const void *", "struct kmem_cache *", "gfp_t", "int"]
        );
        assert_eq!(btf.tracepoint_args("bar"), None);
    }

    #[test]
    fn big_endian_blobs_parse_the_same() {
        let btf = Btf::parse(&fixture(true)).unwrap();
        assert_eq!(btf.member_offset("kmem_cache", "rcu_word"), Some(16));
        assert_eq!(btf.enum_value("BIG_VALUE"), Some(0x1_0000_0002));
        assert_eq!(
            btf.tracepoint_args("foo").unwrap(),
            ["unsigned long", "const void *", "struct kmem_cache *", "gfp_t", "int"]
        );
    }

    #[test]
    fn declarators_nest_the_c_way() {
        let mut b = Builder::new();
        let char_ = b.int("char", 1);
        let int = b.int("int", 4);
        let char_ptr = b.ptr(char_);
        let char_ptr_ptr = b.ptr(char_ptr);
        let const_char_ptr = b.konst(char_ptr);
        let const_ptr_ptr = b.ptr(const_char_ptr);
        let arr = b.ty("", 3, false, 0, 0, &[int, int, 4]);
        let arr_ptr = b.ptr(arr);
        let cb = b.func_proto(int, &[int, char_ptr]);
        let cb_ptr = b.ptr(cb);
        let fwd = b.ty("page", 7, false, 0, 0, &[]);
        let fwd_ptr = b.ptr(fwd);
        let tag = b.ty("user", 18, false, 0, char_, &[]);
        let user_ptr = b.ptr(tag);
        let void_ptr = b.ptr(0);
        let proto = b.func_proto(
            0,
            &[void_ptr, char_ptr_ptr, const_ptr_ptr, arr_ptr, cb_ptr, fwd_ptr, user_ptr, 0],
        );
        let proto_ptr = b.ptr(proto);
        b.typedef("btf_trace_decl", proto_ptr);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(
            btf.tracepoint_args("decl").unwrap(),
            [
                "char **",
                "char *const *",
                "int (*)[4]",
                "int (*)(int, char *)",
                "struct page *",
                "char *",
                "...",
            ]
        );
    }

    #[test]
    fn self_referencing_types_end_in_none() {
        let mut b = Builder::new();
        // Type 1: a struct made of four anonymous copies of itself.
        b.composite("loop", false, false, 8, &[("", 1, 0), ("", 1, 0), ("", 1, 0), ("", 1, 0)]);
        // Types 2 and 3: a prototype whose parameters point back at it.
        b.func_proto(0, &[3, 3, 3, 3]);
        b.ptr(2);
        b.typedef("btf_trace_loop", 3);
        // Type 5: a const that wraps itself.
        b.konst(5);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.member_offset("loop", "x"), None);
        assert_eq!(btf.tracepoint_args("loop"), None);
        assert_eq!(btf.size_of(5, 0), None);
    }

    #[test]
    fn bad_magic_is_rejected() {
        let mut blob = fixture(false);
        blob[0] = 0x00;
        let err = Btf::parse(&blob).unwrap_err();
        assert!(matches!(err, BtfError::BadMagic { found: 0xeb00 }), "{err}");
        assert!(matches!(Btf::parse(&[]), Err(BtfError::Truncated { .. })));
    }

    #[test]
    fn truncated_type_section_is_rejected() {
        let mut b = Builder::new();
        b.int("int", 4);
        // A struct claiming two members but carrying one.
        b.ty("s", 4, false, 2, 8, &[0, 1, 0]);
        let blob = b.build();
        let err = Btf::parse(&blob).unwrap_err();
        match err {
            BtfError::Truncated { offset, needed, .. } => {
                // Header (24) + INT (16) + struct header (12).
                assert_eq!((offset, needed), (52, 24));
            }
            other => panic!("expected Truncated, got {other}"),
        }
        // A blob cut short before the sections the header promises.
        let err = Btf::parse(&blob[..30]).unwrap_err();
        assert!(matches!(err, BtfError::Truncated { what: "type section", .. }), "{err}");
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let mut b = Builder::new();
        b.int("int", 4);
        b.ty("mystery", 25, false, 0, 0, &[]);
        let err = Btf::parse(&b.build()).unwrap_err();
        assert!(matches!(err, BtfError::UnknownKind { kind: 25, type_id: 2 }), "{err}");
        assert_eq!(err.to_string(), "unknown BTF kind 25 at type id 2");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Btf::from_file(Path::new("/nonexistent/btf")).unwrap_err();
        assert!(err.to_string().starts_with("cannot read BTF from /nonexistent/btf:"), "{err}");
    }

    /// Against the running kernel: the layout slabtrace needs must be found, whatever the
    /// numbers (on Linux 6.18: `kmem_cache.flags` 16, `.size` 32, `.object_size` 36, `.name` 104).
    #[test]
    #[ignore = "reads the live kernel as root: `cargo xtask test` runs it"]
    fn running_kernel_vmlinux() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let start = std::time::Instant::now();
        let btf = Btf::from_file(path).unwrap();
        eprintln!("parsed {} in {:?}: {btf:?}", path.display(), start.elapsed());

        let offsets: Vec<u32> = ["name", "size", "object_size", "flags"]
            .iter()
            .map(|m| btf.member_offset("kmem_cache", m).unwrap_or_else(|| panic!("kmem_cache.{m}")))
            .collect();
        let mut distinct = offsets.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), offsets.len(), "{offsets:?}");
        assert_eq!(btf.member_size("kmem_cache", "size"), Some(4));
        assert_eq!(btf.member_size("kmem_cache", "name"), Some(8));
        assert!(btf.member_offset("task_struct", "stack").is_some());
        assert!(btf.enum_value("___GFP_ACCOUNT_BIT").is_some());
        assert!(btf.enum_value("_SLAB_ACCOUNT").is_some());

        assert_eq!(
            btf.tracepoint_args("kmem_cache_alloc").unwrap(),
            ["unsigned long", "const void *", "struct kmem_cache *", "gfp_t", "int"]
        );
        assert_eq!(btf.tracepoint_args("kfree").unwrap(), ["unsigned long", "const void *"]);
        assert_eq!(
            btf.tracepoint_args("kmalloc").unwrap(),
            ["unsigned long", "const void *", "size_t", "size_t", "gfp_t", "int"]
        );
        assert_eq!(
            btf.tracepoint_args("kmem_cache_free").unwrap(),
            ["unsigned long", "const void *", "const struct kmem_cache *"]
        );
        // The OOM programs' tracepoints and the fields they follow to cgroups: a static
        // struct of mm/vmscan.c is in BTF too.
        assert_eq!(btf.tracepoint_args("mark_victim").unwrap(), ["struct task_struct *", "uid_t"]);
        assert_eq!(btf.tracepoint_args("mm_vmscan_memcg_reclaim_begin").unwrap(), ["int", "gfp_t"]);
        assert_eq!(btf.member_size("task_struct", "comm"), Some(16));
        assert_eq!(btf.member_size("kernfs_node", "id"), Some(8));
        assert_eq!(btf.member_offset("cgroup_subsys_state", "cgroup"), Some(0));
        assert_eq!(btf.member_size("scan_control", "target_mem_cgroup"), Some(8));
        assert!(btf.member_offset("scan_control", "reclaim_state").is_some());
        // The shrinker programs' tracepoints, spelled as the layout check expects them.
        assert_eq!(
            btf.tracepoint_args("mm_shrink_slab_start").unwrap(),
            [
                "struct shrinker *",
                "struct shrink_control *",
                "long",
                "unsigned long",
                "unsigned long long",
                "unsigned long",
                "int"
            ]
        );
        assert_eq!(
            btf.tracepoint_args("mm_shrink_slab_end").unwrap(),
            ["struct shrinker *", "int", "int", "long", "long", "long"]
        );
        assert_eq!(btf.member_size("shrinker", "scan_objects"), Some(8));
    }
}
