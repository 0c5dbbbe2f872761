//! Per-socket numbers carried by state changes: which `tcp_sock` fields to copy (a plan of
//! memory windows built from the running kernel's BTF) and how to read them back.
use tcptrace_common::{SNAP_BYTES, SNAP_FIELDS, SNAP_WINDOW_LEN, SNAP_WINDOWS, SnapPlan};

use crate::{btf::Btf, tcp::TcpState};

/// One `tcp_sock` field a snapshot can carry. The discriminant indexes [`SockSnapshot`] arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Field {
    /// `tcp_sock.bytes_acked`: payload bytes the peer acknowledged (sent and delivered).
    BytesAcked,
    /// `tcp_sock.bytes_received`: payload bytes received in order.
    BytesReceived,
    /// `tcp_sock.srtt_us >> 3`: smoothed RTT in microseconds.
    SrttUs,
    /// `tcp_sock.total_retrans`: segments retransmitted over the socket's life.
    TotalRetrans,
    /// `tcp_sock.rx_opt.mss_clamp`: the MSS the peer announced (bounded by `TCP_MAXSEG`).
    MssClamp,
    /// `tcp_sock.mss_cache`: current send MSS (payload per segment, after options).
    MssCache,
    /// `tcp_sock.rx_opt.tstamp_ok`: timestamps negotiated.
    Timestamps,
    /// `tcp_sock.rx_opt.wscale_ok`: window scaling negotiated.
    WscaleOk,
    /// `tcp_sock.rx_opt.sack_ok`: SACK negotiated (non-zero).
    Sack,
    /// `tcp_sock.rx_opt.snd_wscale`: the peer's window scale (applies to what we send).
    SndWscale,
    /// `tcp_sock.rx_opt.rcv_wscale`: our window scale.
    RcvWscale,
    /// `inet_connection_sock.icsk_syn_retries`: per-socket `TCP_SYNCNT` (0 = sysctl).
    SynRetries,
    /// `inet_connection_sock.icsk_user_timeout`: `TCP_USER_TIMEOUT` in ms (0 = none).
    UserTimeoutMs,
    /// `tcp_sock.keepalive_time`: per-socket `TCP_KEEPIDLE` in jiffies (0 = sysctl).
    KeepaliveTimeJiffies,
    /// `tcp_sock.keepalive_intvl`: per-socket `TCP_KEEPINTVL` in jiffies (0 = sysctl).
    KeepaliveIntvlJiffies,
    /// `tcp_sock.keepalive_probes`: per-socket `TCP_KEEPCNT` (0 = sysctl).
    KeepaliveProbes,
    /// `tcp_sock.linger2`: per-socket `TCP_LINGER2` in jiffies (0 = sysctl, < 0 = none).
    Linger2Jiffies,
    /// `sk_flags` (`sock_common.skc_flags` on 6.x): `SO_KEEPALIVE` is bit `SOCK_KEEPOPEN`.
    KeepOpen,
    /// `sk_flags` bit `SOCK_DEAD`: the application closed the socket (an orphan), so orphan
    /// rules (`tcp_orphan_retries`, `tcp_fin_timeout`) govern it rather than the live ones.
    Orphan,
}

/// Number of [`Field`]s.
pub const FIELDS: usize = 19;

impl Field {
    pub const ALL: [Field; FIELDS] = [
        Self::BytesAcked,
        Self::BytesReceived,
        Self::SrttUs,
        Self::TotalRetrans,
        Self::MssClamp,
        Self::MssCache,
        Self::Timestamps,
        Self::WscaleOk,
        Self::Sack,
        Self::SndWscale,
        Self::RcvWscale,
        Self::SynRetries,
        Self::UserTimeoutMs,
        Self::KeepaliveTimeJiffies,
        Self::KeepaliveIntvlJiffies,
        Self::KeepaliveProbes,
        Self::Linger2Jiffies,
        Self::KeepOpen,
        Self::Orphan,
    ];

    /// JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Self::BytesAcked => "bytes_acked",
            Self::BytesReceived => "bytes_received",
            Self::SrttUs => "srtt_us",
            Self::TotalRetrans => "total_retrans",
            Self::MssClamp => "mss_clamp",
            Self::MssCache => "mss_cache",
            Self::Timestamps => "timestamps",
            Self::WscaleOk => "wscale_ok",
            Self::Sack => "sack",
            Self::SndWscale => "snd_wscale",
            Self::RcvWscale => "rcv_wscale",
            Self::SynRetries => "syn_retries",
            Self::UserTimeoutMs => "user_timeout_ms",
            Self::KeepaliveTimeJiffies => "keepalive_time_jiffies",
            Self::KeepaliveIntvlJiffies => "keepalive_intvl_jiffies",
            Self::KeepaliveProbes => "keepalive_probes",
            Self::Linger2Jiffies => "linger2_jiffies",
            Self::KeepOpen => "keepalive",
            Self::Orphan => "orphan",
        }
    }

    /// The field with JSON key `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Struct and member path in BTF.
    fn btf_path(self) -> (&'static str, &'static str) {
        match self {
            Self::BytesAcked => ("tcp_sock", "bytes_acked"),
            Self::BytesReceived => ("tcp_sock", "bytes_received"),
            Self::SrttUs => ("tcp_sock", "srtt_us"),
            Self::TotalRetrans => ("tcp_sock", "total_retrans"),
            Self::MssClamp => ("tcp_sock", "rx_opt.mss_clamp"),
            Self::MssCache => ("tcp_sock", "mss_cache"),
            Self::Timestamps => ("tcp_sock", "rx_opt.tstamp_ok"),
            Self::WscaleOk => ("tcp_sock", "rx_opt.wscale_ok"),
            Self::Sack => ("tcp_sock", "rx_opt.sack_ok"),
            Self::SndWscale => ("tcp_sock", "rx_opt.snd_wscale"),
            Self::RcvWscale => ("tcp_sock", "rx_opt.rcv_wscale"),
            Self::SynRetries => ("inet_connection_sock", "icsk_syn_retries"),
            Self::UserTimeoutMs => ("inet_connection_sock", "icsk_user_timeout"),
            Self::KeepaliveTimeJiffies => ("tcp_sock", "keepalive_time"),
            Self::KeepaliveIntvlJiffies => ("tcp_sock", "keepalive_intvl"),
            Self::KeepaliveProbes => ("tcp_sock", "keepalive_probes"),
            Self::Linger2Jiffies => ("tcp_sock", "linger2"),
            // 6.x moved it into `sock_common` (`#define sk_flags __sk_common.skc_flags`).
            Self::KeepOpen | Self::Orphan => ("sock", "__sk_common.skc_flags"),
        }
    }

    /// For one-bit `sock_flags` fields, the enumerator naming the bit.
    fn sock_flag(self) -> Option<&'static str> {
        match self {
            Self::KeepOpen => Some("SOCK_KEEPOPEN"),
            Self::Orphan => Some("SOCK_DEAD"),
            _ => None,
        }
    }

    /// Whether the handshake's end carries it (the negotiated options).
    fn at_established(self) -> bool {
        matches!(
            self,
            Self::MssClamp
                | Self::Timestamps
                | Self::WscaleOk
                | Self::Sack
                | Self::SndWscale
                | Self::RcvWscale
        )
    }

    /// Whether the kernel value is signed.
    fn signed(self) -> bool {
        matches!(self, Self::Linger2Jiffies)
    }
}

/// Where a field's bytes landed in the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    /// Byte position in the snapshot.
    pos: u16,
    /// Bytes to load (little endian); for bitfields, the bytes holding the bits.
    size: u8,
    /// Bit position and width for bitfields (`bits == 0`: whole value).
    bit: u8,
    bits: u8,
}

/// How `decode` turns a field's location into its value, worked out once per layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Step {
    pos: u16,
    /// Bytes to load when the eight from `pos` would run past the snapshot.
    size: u8,
    /// Right shift, then mask: a bitfield's bits, or the field's bytes.
    shift: u8,
    mask: u64,
    /// Left-then-arithmetic-right shift that sign-extends a signed field (0: unsigned).
    sign: u8,
    /// Final right shift (`srtt_us` is kept << 3 by the kernel).
    post: u8,
}

impl Step {
    fn of(f: Field, l: Loc) -> Self {
        let size = l.size.min(8);
        let bytes = if size < 8 {
            (1u64 << (8 * size)) - 1
        } else {
            u64::MAX
        };
        let (shift, mask) = if l.bits != 0 {
            (l.bit, (1u64 << l.bits) - 1)
        } else {
            (0, bytes)
        };
        Self {
            pos: l.pos,
            size,
            shift,
            mask,
            sign: if l.bits == 0 && f.signed() && size < 8 {
                64 - 8 * size
            } else {
                0
            },
            post: if f == Field::SrttUs { 3 } else { 0 },
        }
    }
}

/// How to read a snapshot back: one location per field (none when this kernel lacks it or it
/// did not fit the plan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapLayout {
    locs: [Option<Loc>; FIELDS],
    /// The plan's windows copied per new state (see [`SnapPlan::windows`]).
    windows: [u32; 16],
    /// Per new state, the fields those windows hold (bit `f as u8`): what `decode` reads.
    fields: [u32; 16],
    /// Per field, derived from `locs`.
    steps: [Step; FIELDS],
}

/// The numbers of one snapshot. `known` has bit `f as u8` set for each field present. Stored
/// compactly: every field fits 32 bits except the two byte counters, whose high halves are
/// kept apart; a signed field is sign-extended when read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockSnapshot {
    low: [u32; FIELDS],
    /// High halves of `BytesAcked` and `BytesReceived` (the first two fields).
    high: [u32; 2],
    pub known: u32,
}

impl SockSnapshot {
    pub fn get(&self, f: Field) -> Option<u64> {
        if self.known & (1 << f as u8) == 0 {
            return None;
        }
        let i = f as usize;
        let low = self.low[i];
        Some(match self.high.get(i) {
            Some(&h) => (u64::from(h) << 32) | u64::from(low),
            None if f.signed() => i64::from(low as i32) as u64,
            None => u64::from(low),
        })
    }

    pub fn set(&mut self, f: Field, v: u64) {
        let i = f as usize;
        self.low[i] = v as u32;
        if let Some(h) = self.high.get_mut(i) {
            *h = (v >> 32) as u32;
        }
        self.known |= 1 << f as u8;
    }

    /// A signed field (`linger2`), sign-restored.
    pub fn get_signed(&self, f: Field) -> Option<i64> {
        self.get(f).map(|v| v as i64)
    }

    /// Present fields with their values, in [`Field::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Field, u64)> + '_ {
        Field::ALL
            .into_iter()
            .filter_map(|f| self.get(f).map(|v| (f, v)))
    }
}

/// On which new states userspace wants a snapshot: the handshake's end (options) and the
/// socket's end (bytes, RTT, retransmits, per-socket overrides).
pub const SNAP_STATES: [TcpState; 2] = [TcpState::ESTABLISHED, TcpState::CLOSE];

struct Want {
    field: Field,
    /// Offset from `struct sock`.
    off: u32,
    size: u32,
    bit: u32,
    bits: u32,
}

/// Sizes of the loads that copy a field of `size` bytes (at most 8), largest first.
fn pieces(size: u32) -> Vec<u32> {
    let mut left = size;
    let mut out = Vec::new();
    for p in [8, 4, 2, 1] {
        while left >= p {
            out.push(p);
            left -= p;
        }
    }
    out
}

/// Builds the plan the programs follow and the layout to decode its output. Fields this kernel
/// does not have are left out; if the fields need more windows than the ABI has, the ones at
/// the highest offsets are left out (never silently mis-read).
pub fn plan(btf: &Btf) -> (SnapPlan, SnapLayout) {
    let flags = btf.enum_values("sock_flags").unwrap_or_default();
    let flag_bit = |name: &str| {
        flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v as u32)
    };
    let mut wants: Vec<Want> = Vec::new();
    for field in Field::ALL {
        let (st, path) = field.btf_path();
        let flag = field.sock_flag();
        let member = match flag {
            Some(_) => btf.member(st, path).or_else(|| btf.member(st, "sk_flags")),
            None => btf.member(st, path),
        };
        let Some(m) = member else {
            continue;
        };
        let (off, size, bit, bits) = match flag {
            Some(name) => {
                let Some(b) = flag_bit(name) else { continue };
                (m.byte_offset + b / 8, 1, b % 8, 1)
            }
            None if m.bit_size != 0 => (
                m.byte_offset,
                (m.bit_offset + m.bit_size).div_ceil(8),
                m.bit_offset,
                m.bit_size,
            ),
            None => (m.byte_offset, m.size, 0, 0),
        };
        if size == 0 || size > 8 {
            continue;
        }
        wants.push(Want {
            field,
            off,
            size,
            bit,
            bits,
        });
    }
    wants.sort_by_key(|w| w.off);

    let mut plan = SnapPlan::none();
    let mut layout = SnapLayout::default();
    let mut piece_masks = [0u32; FIELDS];
    let mut win: Option<(usize, u32)> = None; // (index, start offset)
    for w in wants {
        let fits = win.is_some_and(|(_, start)| w.off + w.size - start <= SNAP_WINDOW_LEN as u32);
        if !fits {
            let next = win.map_or(0, |(i, _)| i + 1);
            if next >= SNAP_WINDOWS {
                break;
            }
            win = Some((next, w.off));
            plan.off[next] = w.off;
            plan.n = next as u32 + 1;
        }
        let Some((i, start)) = win else { break };
        let pos = (i * SNAP_WINDOW_LEN) as u16 + (w.off - start) as u16;
        // The same bytes as loads of 1, 2, 4 or 8 bytes, for the programs that cannot copy a
        // window; a field that does not fit the pieces left is left out of both.
        let pieces = pieces(w.size);
        if plan.n_fields as usize + pieces.len() > SNAP_FIELDS {
            break;
        }
        let first = plan.n_fields as usize;
        let mut at = 0;
        for (k, size) in pieces.iter().enumerate() {
            plan.field_off[first + k] = w.off + at;
            plan.field_pos[first + k] = pos + at as u16;
            plan.field_size[first + k] = *size as u8;
            at += size;
        }
        plan.n_fields += pieces.len() as u32;
        let mask = ((1u32 << pieces.len()) - 1) << first;
        piece_masks[w.field as usize] = mask;
        plan.len[i] = plan.len[i].max(w.off + w.size - start);
        layout.locs[w.field as usize] = Some(Loc {
            pos,
            size: w.size as u8,
            bit: w.bit as u8,
            bits: w.bits as u8,
        });
    }
    // The handshake's end copies only the windows holding options; the socket's end, all.
    let all = (1u32 << plan.n) - 1;
    let options = || {
        Field::ALL
            .into_iter()
            .filter(|f| f.at_established())
            .filter(|f| layout.locs[*f as usize].is_some())
    };
    plan.windows[TcpState::ESTABLISHED.0 as usize] = options()
        .filter_map(|f| layout.locs[f as usize])
        .fold(0u32, |m, loc| m | 1 << (loc.pos as usize / SNAP_WINDOW_LEN));
    plan.windows[TcpState::CLOSE.0 as usize] = all;
    plan.fields[TcpState::ESTABLISHED.0 as usize] =
        options().fold(0, |m, f| m | piece_masks[f as usize]);
    plan.fields[TcpState::CLOSE.0 as usize] = piece_masks.iter().fold(0, |m, p| m | p);
    for s in SNAP_STATES {
        plan.new_states |= 1 << s.0;
    }
    layout.windows = plan.windows;
    layout.index();
    (plan, layout)
}

impl SnapLayout {
    /// A one-line text form for recordings: the 16 per-state window masks, then per field
    /// `pos:size:bit:bits` or `-`, all separated by commas.
    pub fn to_text(&self) -> String {
        let mut parts: Vec<String> = self.windows.iter().map(|m| format!("{m:x}")).collect();
        for loc in &self.locs {
            parts.push(match loc {
                Some(l) => format!("{}:{}:{}:{}", l.pos, l.size, l.bit, l.bits),
                None => "-".into(),
            });
        }
        parts.join(",")
    }

    /// Reads [`SnapLayout::to_text`] back; `None` when it is not one (or out of range).
    pub fn from_text(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split(',').collect();
        if parts.len() != 16 + FIELDS {
            return None;
        }
        let mut out = Self::default();
        for (w, p) in out.windows.iter_mut().zip(&parts[..16]) {
            *w = u32::from_str_radix(p, 16).ok()?;
        }
        for (loc, p) in out.locs.iter_mut().zip(&parts[16..]) {
            if *p == "-" {
                continue;
            }
            let n: Vec<&str> = p.split(':').collect();
            let [pos, size, bit, bits] = n[..] else {
                return None;
            };
            let l = Loc {
                pos: pos.parse().ok()?,
                size: size.parse().ok()?,
                bit: bit.parse().ok()?,
                bits: bits.parse().ok()?,
            };
            if l.size == 0 || l.size > 8 || usize::from(l.pos) + usize::from(l.size) > SNAP_BYTES {
                return None;
            }
            *loc = Some(l);
        }
        out.index();
        Some(out)
    }

    /// Derives `fields` and `steps` from `windows` and `locs`.
    fn index(&mut self) {
        for (f, (step, loc)) in Field::ALL
            .into_iter()
            .zip(self.steps.iter_mut().zip(self.locs))
        {
            *step = loc.map_or(Step::default(), |l| Step::of(f, l));
        }
        for (fields, windows) in self.fields.iter_mut().zip(self.windows) {
            *fields = Field::ALL
                .into_iter()
                .filter(|f| {
                    self.locs[*f as usize]
                        .is_some_and(|l| windows & (1 << (l.pos as usize / SNAP_WINDOW_LEN)) != 0)
                })
                .fold(0, |m, f| m | 1 << f as u8);
        }
    }

    /// Reads the fields out of the snapshot bytes of a change to `new` (only the windows the
    /// plan copies for that state hold data).
    pub fn decode(&self, snap: &[u8; SNAP_BYTES], new: TcpState) -> SockSnapshot {
        let mut out = SockSnapshot::default();
        let mut wanted = self.fields.get(new.0 as usize).copied().unwrap_or(0);
        while wanted != 0 {
            let i = wanted.trailing_zeros() as usize;
            wanted &= wanted - 1;
            let (Some(step), Some(&f)) = (self.steps.get(i), Field::ALL.get(i)) else {
                continue;
            };
            let start = usize::from(step.pos);
            let raw = match snap.get(start..start + 8) {
                Some(eight) => u64::from_le_bytes(eight.try_into().unwrap_or([0; 8])),
                None => {
                    let mut tail = [0u8; 8];
                    let size = usize::from(step.size);
                    if let Some(bytes) = snap.get(start..start + size) {
                        tail[..size].copy_from_slice(bytes);
                    }
                    u64::from_le_bytes(tail)
                }
            };
            let mut v = (raw >> step.shift) & step.mask;
            if step.sign != 0 {
                v = (((v << step.sign) as i64) >> step.sign) as u64;
            }
            out.set(f, v >> step.post);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_plan_covers_every_field() {
        let bytes = match std::fs::read("/sys/kernel/btf/vmlinux") {
            Ok(b) => b,
            Err(e) if std::env::var_os("CI").is_some() => panic!("vmlinux BTF: {e}"),
            Err(e) => return eprintln!("skipping: {e}"),
        };
        let btf = Btf::parse(&bytes).unwrap();
        let (plan, layout) = plan(&btf);
        assert!(plan.n as usize <= SNAP_WINDOWS);
        for f in Field::ALL {
            assert!(
                layout.locs[f as usize].is_some(),
                "{f:?} not planned: {plan:?}"
            );
        }
        // Fill the windows from a fake socket image and read the fields back.
        let sock_size = btf.struct_size("tcp_sock").unwrap() as usize;
        let mut image = vec![0u8; sock_size];
        let put = |image: &mut Vec<u8>, path: &str, v: u64, n: usize| {
            let m = btf.member("tcp_sock", path).unwrap();
            let o = m.byte_offset as usize;
            image[o..o + n].copy_from_slice(&v.to_le_bytes()[..n]);
        };
        put(&mut image, "bytes_acked", 1_048_576, 8);
        put(&mut image, "srtt_us", 8 * 250, 4);
        put(&mut image, "rx_opt.mss_clamp", 1460, 2);
        put(&mut image, "linger2", (-1i64) as u64, 4);
        let mut snap = [0u8; SNAP_BYTES];
        for i in 0..plan.n as usize {
            let (o, l) = (plan.off[i] as usize, plan.len[i] as usize);
            snap[i * SNAP_WINDOW_LEN..i * SNAP_WINDOW_LEN + l].copy_from_slice(&image[o..o + l]);
        }
        let s = layout.decode(&snap, TcpState::CLOSE);
        // The field-by-field plan puts the same bytes where the layout reads them.
        for state in [TcpState::ESTABLISHED, TcpState::CLOSE] {
            let mut pieces = [0u8; SNAP_BYTES];
            let mask = plan.fields[state.0 as usize];
            for i in (0..plan.n_fields as usize).filter(|i| mask & (1 << i) != 0) {
                let (o, p, n) = (
                    plan.field_off[i] as usize,
                    plan.field_pos[i] as usize,
                    plan.field_size[i] as usize,
                );
                assert!([1, 2, 4, 8].contains(&n), "piece {i} of {n} bytes");
                pieces[p..p + n].copy_from_slice(&image[o..o + n]);
            }
            assert_eq!(
                layout.decode(&pieces, state),
                layout.decode(&snap, state),
                "{state:?}"
            );
        }
        assert_eq!(s.get(Field::BytesAcked), Some(1_048_576));
        assert_eq!(s.get(Field::SrttUs), Some(250));
        assert_eq!(s.get(Field::MssClamp), Some(1460));
        assert_eq!(s.get_signed(Field::Linger2Jiffies), Some(-1));
        assert_eq!(plan.new_states, (1 << 1) | (1 << 7));
    }

    #[test]
    fn layout_text_round_trips() {
        let mut l = SnapLayout::default();
        l.windows[1] = 0x3;
        l.windows[7] = 0x3ff;
        l.locs[Field::SrttUs as usize] = Some(Loc {
            pos: 20,
            size: 4,
            bit: 0,
            bits: 0,
        });
        l.index();
        assert_eq!(SnapLayout::from_text(&l.to_text()), Some(l));
        // Only the windows copied for a state are read: SrttUs (window 1) is read at CLOSE.
        let snap = [0x10u8; SNAP_BYTES];
        assert_eq!(
            l.decode(&snap, TcpState::CLOSE).get(Field::SrttUs),
            Some(0x1010_1010 >> 3)
        );
        assert_eq!(l.decode(&snap, TcpState::SYN_SENT).get(Field::SrttUs), None);
        assert_eq!(SnapLayout::from_text("1,2,3"), None);
        let bad = l.to_text().replace("20:4:0:0", "400:8:0:0");
        assert_eq!(SnapLayout::from_text(&bad), None);
    }

    #[test]
    fn compact_values_round_trip() {
        let mut s = SockSnapshot::default();
        s.set(Field::BytesAcked, 5_000_000_123);
        s.set(Field::Linger2Jiffies, (-1i64) as u64);
        s.set(Field::SrttUs, 250);
        assert_eq!(s.get(Field::BytesAcked), Some(5_000_000_123));
        assert_eq!(s.get_signed(Field::Linger2Jiffies), Some(-1));
        assert_eq!(s.get(Field::SrttUs), Some(250));
        assert_eq!(s.get(Field::BytesReceived), None);
        assert_eq!(s.iter().count(), 3);
    }

    #[test]
    fn names_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
        }
    }
}
