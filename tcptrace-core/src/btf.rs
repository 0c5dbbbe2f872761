//! A small parser of raw kernel BTF (`/sys/kernel/btf/vmlinux`), the only one that reads the
//! kernel's BTF: resolves struct member offsets by dotted path (through anonymous structs and
//! unions), enum values by name and the ids of the `btf_trace_*` typedefs BTF tracepoints
//! attach by, so the eBPF programs read kernel structs at this kernel's offsets without
//! compiled-in layouts. A kind newer than this parser ends the parse there instead of failing
//! it: the types before it stay usable.
use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why a BTF blob could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF (bad magic)")]
    Magic,
    #[error("truncated BTF: {0}")]
    Truncated(&'static str),
    #[error("unsupported BTF version {0}")]
    Version(u8),
    #[error("BTF of {0} bytes is larger than the {MAX_BYTES} bytes kernel BTF can be")]
    TooLarge(u64),
}

/// Largest BTF blob accepted (vmlinux BTF is a few MiB).
pub const MAX_BYTES: u64 = 64 << 20;

/// Length of the header every BTF blob starts with.
pub const HEADER_LEN: usize = 24;

/// Where parsing stopped at a kind this parser does not know: types from `id` on are not
/// visible (their size is unknown, so the next type cannot be found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownKind {
    pub kind: u32,
    pub id: u32,
}

/// The total length of a BTF blob from its first [`HEADER_LEN`] bytes, so a reader takes
/// exactly that much (and refuses what is not BTF before reading it).
pub fn blob_len(header: &[u8]) -> Result<u64, BtfError> {
    if header.len() < HEADER_LEN {
        return Err(BtfError::Truncated("header"));
    }
    let big_endian = match [header[0], header[1]] {
        m if u16::from_le_bytes(m) == MAGIC => false,
        m if u16::from_be_bytes(m) == MAGIC => true,
        _ => return Err(BtfError::Magic),
    };
    let w = |i: usize| u64::from(rd_u32(header, 4 + 4 * i, big_endian).unwrap_or(0));
    let (hdr_len, type_off, type_len, str_off, str_len) = (w(0), w(1), w(2), w(3), w(4));
    let len = hdr_len + (type_off + type_len).max(str_off + str_len);
    if len > MAX_BYTES {
        return Err(BtfError::TooLarge(len));
    }
    Ok(len)
}

/// Where a member sits inside the outermost struct of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset of the member (of the byte containing its first bit, for bitfields).
    pub byte_offset: u32,
    /// Bit offset within that byte (0 unless a bitfield).
    pub bit_offset: u32,
    /// Width in bits for bitfields, 0 otherwise.
    pub bit_size: u32,
    /// Byte size of the member's type.
    pub size: u32,
}

#[derive(Debug, Clone, Copy)]
struct Type {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    /// Byte position of the kind-specific data in the type section.
    extra: usize,
}

impl Type {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// Parsed BTF: type table plus name indexes.
#[derive(Debug)]
pub struct Btf {
    types_sec: Vec<u8>,
    strings: Vec<u8>,
    big_endian: bool,
    /// Index = type id (0 is void, a placeholder).
    types: Vec<Type>,
    composites: HashMap<String, u32>,
    enums: HashMap<String, u32>,
    /// `btf_trace_<tracepoint>` typedefs: what a BTF tracepoint attaches by.
    trace_typedefs: HashMap<String, u32>,
    unknown: Option<UnknownKind>,
}

fn rd_u32(b: &[u8], at: usize, be: bool) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if be {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

impl Btf {
    /// Parses a raw BTF blob.
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        let magic = bytes.get(..2).ok_or(BtfError::Truncated("header"))?;
        let big_endian = match [magic[0], magic[1]] {
            m if u16::from_le_bytes(m) == MAGIC => false,
            m if u16::from_be_bytes(m) == MAGIC => true,
            _ => return Err(BtfError::Magic),
        };
        let version = *bytes.get(2).ok_or(BtfError::Truncated("header"))?;
        if version != 1 {
            return Err(BtfError::Version(version));
        }
        let hdr =
            |i: usize| rd_u32(bytes, 4 + 4 * i, big_endian).ok_or(BtfError::Truncated("header"));
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (hdr(0)?, hdr(1)?, hdr(2)?, hdr(3)?, hdr(4)?);
        let section = |off: u32, len: u32, what| {
            let start = (hdr_len as usize).checked_add(off as usize);
            let end = start.and_then(|s| s.checked_add(len as usize));
            match (start, end) {
                (Some(s), Some(e)) if e <= bytes.len() => Ok(bytes[s..e].to_vec()),
                _ => Err(BtfError::Truncated(what)),
            }
        };
        let types_sec = section(type_off, type_len, "type section")?;
        let strings = section(str_off, str_len, "string section")?;
        let mut btf = Btf {
            types_sec,
            strings,
            big_endian,
            types: vec![Type {
                name_off: 0,
                info: 0,
                size_or_type: 0,
                extra: 0,
            }],
            composites: HashMap::new(),
            enums: HashMap::new(),
            trace_typedefs: HashMap::new(),
            unknown: None,
        };
        btf.index()?;
        Ok(btf)
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        rd_u32(&self.types_sec, at, self.big_endian)
    }

    fn index(&mut self) -> Result<(), BtfError> {
        let mut pos = 0usize;
        let len = self.types_sec.len();
        while pos < len {
            let id = self.types.len() as u32;
            let field = |i: usize| self.u32_at(pos + 4 * i).ok_or(BtfError::Truncated("type"));
            let t = Type {
                name_off: field(0)?,
                info: field(1)?,
                size_or_type: field(2)?,
                extra: pos + 12,
            };
            let vlen = t.vlen();
            let extra_len = match t.kind() {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                kind => {
                    self.unknown = Some(UnknownKind { kind, id });
                    return Ok(());
                }
            };
            pos = t.extra + extra_len;
            if pos > len {
                return Err(BtfError::Truncated("type data"));
            }
            if t.name_off != 0 {
                let kind = t.kind();
                if matches!(kind, KIND_STRUCT | KIND_UNION) {
                    let name = self.name(t.name_off).to_string();
                    self.composites.entry(name).or_insert(id);
                } else if matches!(kind, KIND_ENUM | KIND_ENUM64) {
                    let name = self.name(t.name_off).to_string();
                    self.enums.entry(name).or_insert(id);
                } else if kind == KIND_TYPEDEF && self.name(t.name_off).starts_with("btf_trace_") {
                    let name = self.name(t.name_off).to_string();
                    self.trace_typedefs.entry(name).or_insert(id);
                }
            }
            self.types.push(t);
        }
        Ok(())
    }

    fn name(&self, off: u32) -> &str {
        let Some(tail) = self.strings.get(off as usize..) else {
            return "";
        };
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize).filter(|_| id != 0)
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..64 {
            let t = self.ty(id)?;
            match t.kind() {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// Byte size of a type.
    fn size_of(&self, id: u32) -> Option<u32> {
        let id = self.resolve(id)?;
        let t = self.ty(id)?;
        match t.kind() {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Some(t.size_or_type)
            }
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let elem = self.u32_at(t.extra)?;
                let n = self.u32_at(t.extra + 8)?;
                self.size_of(elem)?.checked_mul(n)
            }
            _ => None,
        }
    }

    /// Members of a struct/union: (name, type id, bit offset, bitfield size).
    fn members(&self, id: u32) -> impl Iterator<Item = (&str, u32, u32, u32)> + '_ {
        let t = self.ty(id).copied();
        let n = t
            .filter(|t| matches!(t.kind(), KIND_STRUCT | KIND_UNION))
            .map_or(0, |t| t.vlen());
        (0..n).filter_map(move |i| {
            let t = t?;
            let at = t.extra + 12 * i;
            let name = self.name(self.u32_at(at)?);
            let ty = self.u32_at(at + 4)?;
            let off = self.u32_at(at + 8)?;
            let (bit_off, bits) = if t.kind_flag() {
                (off & 0x00ff_ffff, off >> 24)
            } else {
                (off, 0)
            };
            Some((name, ty, bit_off, bits))
        })
    }

    /// Finds `name` among the members of composite `id`, looking inside anonymous members.
    /// Returns (bit offset from the start of `id`, bitfield size, member type id).
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32, u32)> {
        if depth > 16 {
            return None;
        }
        for (mname, ty, bit_off, bits) in self.members(id) {
            if mname == name {
                return Some((bit_off, bits, ty));
            }
            if mname.is_empty()
                && let Some(inner) = self.resolve(ty)
                && let Some((o, b, t)) = self.find_member(inner, name, depth + 1)
            {
                return Some((bit_off + o, b, t));
            }
        }
        None
    }

    /// Offset of a member of `struct_name` (or union) by dotted path, e.g.
    /// `member("sock", "__sk_common.skc_net.net")`.
    pub fn member(&self, struct_name: &str, path: &str) -> Option<Member> {
        let mut cur = *self.composites.get(struct_name)?;
        let mut bit_total = 0u32;
        let mut last = None;
        for seg in path.split('.') {
            if last.is_some() {
                cur = self.resolve(last?)?;
            }
            let (bit_off, bits, ty) = self.find_member(cur, seg, 0)?;
            bit_total = bit_total.checked_add(bit_off)?;
            last = Some(ty);
            if bits != 0 {
                return Some(Member {
                    byte_offset: bit_total / 8,
                    bit_offset: bit_total % 8,
                    bit_size: bits,
                    size: self.size_of(ty).unwrap_or(0),
                });
            }
        }
        Some(Member {
            byte_offset: bit_total / 8,
            bit_offset: bit_total % 8,
            bit_size: 0,
            size: self.size_of(last?).unwrap_or(0),
        })
    }

    /// Byte size of a named struct or union.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.composites
            .get(name)
            .and_then(|&id| self.ty(id))
            .map(|t| t.size_or_type)
    }

    /// The values of a named enum (ENUM or ENUM64).
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, i64)>> {
        let id = *self.enums.get(name)?;
        let t = self.ty(id)?;
        let signed = t.kind_flag();
        let mut out = Vec::with_capacity(t.vlen());
        for i in 0..t.vlen() {
            if t.kind() == KIND_ENUM {
                let at = t.extra + 8 * i;
                let n = self.name(self.u32_at(at)?).to_string();
                let raw = self.u32_at(at + 4)?;
                let v = if signed {
                    raw as i32 as i64
                } else {
                    raw as i64
                };
                out.push((n, v));
            } else {
                let at = t.extra + 12 * i;
                let n = self.name(self.u32_at(at)?).to_string();
                let lo = self.u32_at(at + 4)? as u64;
                let hi = self.u32_at(at + 8)? as u64;
                out.push((n, ((hi << 32) | lo) as i64));
            }
        }
        Some(out)
    }

    /// The type id of the `btf_trace_<tracepoint>` typedef a BTF tracepoint attaches by.
    pub fn trace_typedef(&self, tracepoint: &str) -> Option<u32> {
        self.trace_typedefs
            .get(&format!("btf_trace_{tracepoint}"))
            .copied()
    }

    /// Where parsing stopped at an unknown kind, if it did.
    pub fn unknown_kind(&self) -> Option<UnknownKind> {
        self.unknown
    }

    /// Number of types (excluding void).
    pub fn len(&self) -> usize {
        self.types.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A minimal BTF blob in which each `(id, name)` of `typedefs` is a typedef of that name at
/// that type id, every other id a placeholder: enough for a loader that finds BTF tracepoint
/// targets by name and position (aya's), without it parsing the kernel's BTF a second time.
pub fn typedef_stub(typedefs: &[(u32, &str)]) -> Vec<u8> {
    let max = typedefs.iter().map(|(id, _)| *id).max().unwrap_or(0);
    let mut strings = vec![0u8];
    let mut names = HashMap::new();
    for (id, name) in typedefs {
        names.insert(*id, strings.len() as u32);
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    let mut types = Vec::with_capacity(max as usize * 12);
    for id in 1..=max {
        // A typedef (to void) where a name is wanted, a pointer to void elsewhere.
        let (name, kind) = match names.get(&id) {
            Some(off) => (*off, KIND_TYPEDEF),
            None => (0, KIND_PTR),
        };
        for w in [name, kind << 24, 0] {
            types.extend_from_slice(&w.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + types.len() + strings.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[1, 0]);
    let (tl, sl) = (types.len() as u32, strings.len() as u32);
    for w in [HEADER_LEN as u32, 0, tl, tl, sl] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds little-endian BTF blobs for tests.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn w(&mut self, v: u32) {
            self.types.extend_from_slice(&v.to_le_bytes());
        }
        fn head(&mut self, name: &str, kind: u32, vlen: u32, kflag: bool, st: u32) -> u32 {
            let n = self.s(name);
            self.w(n);
            self.w((kind << 24) | vlen | if kflag { 1 << 31 } else { 0 });
            self.w(st);
            self.next_id += 1;
            self.next_id - 1
        }
        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.head(name, KIND_INT, 0, false, size);
            self.w(size * 8);
            id
        }
        fn ptr(&mut self, to: u32) -> u32 {
            self.head("", KIND_PTR, 0, false, to)
        }
        fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.head(name, KIND_TYPEDEF, 0, false, to)
        }
        fn array(&mut self, elem: u32, idx: u32, n: u32) -> u32 {
            let id = self.head("", KIND_ARRAY, 0, false, 0);
            self.w(elem);
            self.w(idx);
            self.w(n);
            id
        }
        /// members: (name, type, bit offset, bitfield size)
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kflag = members.iter().any(|m| m.3 != 0);
            let id = self.head(name, kind, members.len() as u32, kflag, size);
            for &(n, ty, off, bits) in members {
                let no = self.s(n);
                self.w(no);
                self.w(ty);
                self.w(if kflag { (bits << 24) | off } else { off });
            }
            id
        }
        fn enumeration(&mut self, name: &str, vals: &[(&str, i32)]) -> u32 {
            let id = self.head(name, KIND_ENUM, vals.len() as u32, false, 4);
            for &(n, v) in vals {
                let no = self.s(n);
                self.w(no);
                self.w(v as u32);
            }
            id
        }
        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1);
            out.push(0);
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let u8t = b.int("unsigned char", 1);
        let u16t = b.int("unsigned short", 2);
        let u32t = b.int("unsigned int", 4);
        let be32 = b.typedef("__be32", u32t);
        let net = b.composite(KIND_STRUCT, "net", 16, &[("pad", u32t, 0, 0)]);
        let pnet = b.ptr(net);
        let possible = b.composite(KIND_STRUCT, "possible_net_t", 8, &[("net", pnet, 0, 0)]);
        let addrs = b.composite(
            KIND_STRUCT,
            "",
            8,
            &[("skc_daddr", be32, 0, 0), ("skc_rcv_saddr", be32, 32, 0)],
        );
        let anon_union = b.composite(
            KIND_UNION,
            "",
            8,
            &[("skc_addrpair", u32t, 0, 0), ("", addrs, 0, 0)],
        );
        let arr = b.array(u8t, u32t, 16);
        let common = b.composite(
            KIND_STRUCT,
            "sock_common",
            48,
            &[
                ("", anon_union, 0, 0),
                ("skc_family", u16t, 64, 0),
                ("skc_state", u8t, 80, 0),
                ("skc_reuse", u8t, 88, 4),
                ("skc_net", possible, 128, 0),
                ("skc_v6", arr, 192, 0),
            ],
        );
        let const_common = b.head("", KIND_CONST, 0, false, common);
        b.composite(
            KIND_STRUCT,
            "sock",
            64,
            &[
                ("__sk_common", const_common, 0, 0),
                ("sk_protocol", u16t, 388, 0),
            ],
        );
        b.enumeration(
            "sk_rst_reason",
            &[
                ("SK_RST_REASON_NOT_SPECIFIED", 0),
                ("SK_RST_REASON_NO_SOCKET", 1),
            ],
        );
        b.build()
    }

    #[test]
    fn resolves_nested_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        let m = btf.member("sock", "__sk_common.skc_rcv_saddr").unwrap();
        assert_eq!((m.byte_offset, m.size), (4, 4));
        let m = btf.member("sock", "__sk_common.skc_family").unwrap();
        assert_eq!((m.byte_offset, m.size), (8, 2));
        let m = btf.member("sock", "__sk_common.skc_net.net").unwrap();
        assert_eq!((m.byte_offset, m.size), (16, 8));
        let m = btf.member("sock_common", "skc_v6").unwrap();
        assert_eq!((m.byte_offset, m.size), (24, 16));
        assert!(btf.member("sock", "__sk_common.nope").is_none());
        assert!(btf.member("nope", "x").is_none());
        assert_eq!(btf.struct_size("sock_common"), Some(48));
    }

    #[test]
    fn bitfields_report_bit_position() {
        let btf = Btf::parse(&sample()).unwrap();
        let m = btf.member("sock_common", "skc_reuse").unwrap();
        assert_eq!((m.byte_offset, m.bit_offset, m.bit_size), (11, 0, 4));
        let m = btf.member("sock", "sk_protocol").unwrap();
        assert_eq!((m.byte_offset, m.bit_offset, m.bit_size), (48, 4, 0));
    }

    #[test]
    fn enums() {
        let btf = Btf::parse(&sample()).unwrap();
        let v = btf.enum_values("sk_rst_reason").unwrap();
        assert_eq!(v[1], ("SK_RST_REASON_NO_SOCKET".to_string(), 1));
        assert!(btf.enum_values("nope").is_none());
    }

    #[test]
    fn malformed_blobs_are_errors_not_panics() {
        let good = sample();
        for cut in 0..good.len() {
            let _ = Btf::parse(&good[..cut]);
        }
        assert_eq!(Btf::parse(&[0, 0, 1, 0]).unwrap_err(), BtfError::Magic);
        assert!(Btf::parse(&good[..30]).is_err());
        assert_eq!(blob_len(&good).unwrap(), good.len() as u64);
        assert_eq!(blob_len(&[0; 24]), Err(BtfError::Magic));
        let mut huge = good.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(blob_len(&huge), Err(BtfError::TooLarge(_))));
    }

    #[test]
    fn a_kind_from_the_future_ends_the_parse_not_the_program() {
        let mut b = Builder::new();
        let u32t = b.int("unsigned int", 4);
        b.composite(KIND_STRUCT, "net", 4, &[("inum", u32t, 0, 0)]);
        b.typedef("btf_trace_inet_sock_set_state", u32t);
        // Kind 27 does not exist (yet): its trailing data has a size we cannot know.
        b.head("future", 27, 3, false, 0);
        b.w(0xdead_beef);
        b.composite(KIND_STRUCT, "after", 4, &[("x", u32t, 0, 0)]);
        let btf = Btf::parse(&b.build()).expect("parsed up to the unknown kind");
        assert_eq!(btf.member("net", "inum").unwrap().byte_offset, 0);
        assert_eq!(btf.trace_typedef("inet_sock_set_state"), Some(3));
        assert_eq!(btf.unknown_kind(), Some(UnknownKind { kind: 27, id: 4 }));
        assert!(btf.member("after", "x").is_none());
        assert_eq!(btf.len(), 3);
    }

    #[test]
    fn typedef_stub_puts_names_at_their_ids() {
        let stub = typedef_stub(&[(5, "btf_trace_a"), (2, "btf_trace_b")]);
        let btf = Btf::parse(&stub).unwrap();
        assert_eq!(btf.len(), 5);
        assert_eq!(btf.trace_typedef("a"), Some(5));
        assert_eq!(btf.trace_typedef("b"), Some(2));
        assert_eq!(btf.unknown_kind(), None);
    }

    #[test]
    fn live_kernel_btf() {
        let bytes = match std::fs::read("/sys/kernel/btf/vmlinux") {
            Ok(b) => b,
            Err(e) if std::env::var_os("CI").is_some() => panic!("kernel BTF: {e}"),
            Err(e) => return eprintln!("skipping: {e}"),
        };
        let btf = Btf::parse(&bytes).unwrap();
        let m = btf.member("sock", "__sk_common.skc_family").unwrap();
        assert_eq!((m.byte_offset, m.size), (16, 2));
        assert_eq!(
            btf.member("sock_common", "skc_state").unwrap().byte_offset,
            18
        );
        assert!(btf.member("net", "ns.inum").is_some());
        assert_eq!(btf.member("sk_buff", "cb").unwrap().size, 48);
        assert!(btf.member("tcp_skb_cb", "tcp_flags").is_some());
        assert!(btf.member("sock", "sk_protocol").is_some());
        assert!(btf.member("sk_buff", "dev").is_some());
        let flags = btf.enum_values("sock_flags").unwrap();
        assert!(flags.contains(&("SOCK_DEAD".to_string(), 0)));
        // Linux 6.10+ only (layout::Quirks ties it to tcp_send_reset's format).
        if let Some(reasons) = btf.enum_values("sk_rst_reason") {
            assert!(reasons.contains(&("SK_RST_REASON_NOT_SPECIFIED".to_string(), 0)));
        }
        assert!(btf.trace_typedef("inet_sock_set_state").is_some());
        assert_eq!(btf.unknown_kind(), None);
        assert_eq!(blob_len(&bytes).unwrap(), bytes.len() as u64);
    }
}
