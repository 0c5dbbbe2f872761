//! Decodes ring-buffer records (`tcptrace-common`'s ABI) into [`Event`]s, checking length and
//! kind; a malformed record is an error value, never a panic.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tcptrace_common::{
    AF_INET, AF_INET6, REASON_NONE, RECORD_SIZE, SNAP_BYTES, STATE_UNKNOWN, hdr_flags, kind,
    retrans_flags, state_flags,
};

use crate::{
    event::{Comm, Event, EventKind, Family, ResetDirection},
    snapshot::SnapLayout,
    tcp::{SegmentKind, TcpState},
};

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes, expected {RECORD_SIZE}")]
    Length(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
}

/// Header layout offsets (see `tcptrace_common::Header`).
mod off {
    pub const KIND: usize = 0;
    pub const FAMILY: usize = 1;
    pub const FLAGS: usize = 2;
    pub const LPORT: usize = 4;
    pub const RPORT: usize = 6;
    pub const TS: usize = 8;
    pub const SK: usize = 16;
    pub const NETNS: usize = 24;
    pub const TGID: usize = 28;
    pub const TID: usize = 32;
    pub const COMM: usize = 40;
    pub const LADDR: usize = 56;
    pub const RADDR: usize = 72;
    pub const CGROUP: usize = 88;
    pub const BODY: usize = 96;
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn bytes16(b: &[u8], at: usize) -> [u8; 16] {
    b[at..at + 16].try_into().unwrap_or([0; 16])
}

fn addr(family: Family, raw: [u8; 16]) -> IpAddr {
    match family {
        Family::Inet6 => IpAddr::V6(Ipv6Addr::from(raw)),
        _ => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
    }
}

fn state(raw: u8) -> Option<TcpState> {
    (raw != STATE_UNKNOWN && raw != 0).then_some(TcpState(raw))
}

/// Decodes one record; `snap` reads the socket bytes of state changes that carry them.
pub fn decode(b: &[u8], snap: &SnapLayout) -> Result<Event, DecodeError> {
    let snapshot = b.len() == RECORD_SIZE + SNAP_BYTES
        && b[off::KIND] == kind::STATE
        && b[off::BODY + 2] & state_flags::SNAPSHOT != 0;
    if b.len() != RECORD_SIZE && !snapshot {
        return Err(DecodeError::Length(b.len()));
    }
    let body = off::BODY;
    let kind = match b[off::KIND] {
        kind::STATE => EventKind::State {
            old: TcpState(b[body]),
            new: TcpState(b[body + 1]),
            sock: snapshot
                .then(|| <&[u8; SNAP_BYTES]>::try_from(&b[RECORD_SIZE..]).ok())
                .flatten()
                .map(|raw| snap.decode(raw, TcpState(b[body + 1]))),
        },
        kind::RETRANSMIT => {
            let st = state(b[body]);
            let flags = b[body + 2];
            let from_flags = flags & retrans_flags::TCP_FLAGS_VALID != 0;
            let seg = if from_flags {
                SegmentKind::from_flags(b[body + 1])
            } else {
                st.map_or(SegmentKind::Data, SegmentKind::from_state)
            };
            let err = u32_at(b, body + 4) as i32;
            if flags & retrans_flags::HAS_ERR != 0 && err != 0 {
                EventKind::RetransmitFailed {
                    state: st,
                    kind: seg,
                    from_flags,
                    errno: err.saturating_abs(),
                }
            } else {
                EventKind::Retransmit {
                    state: st,
                    kind: seg,
                    from_flags,
                }
            }
        }
        kind::SYNACK_RETRANSMIT => EventKind::SynAckRetransmit {
            listener: u64_at(b, body),
        },
        k @ (kind::RESET_SENT | kind::RESET_RECEIVED) => {
            let reason = u32_at(b, body + 4);
            EventKind::Reset {
                direction: if k == kind::RESET_SENT {
                    ResetDirection::Sent
                } else {
                    ResetDirection::Received
                },
                state: state(b[body]),
                reason: (reason != REASON_NONE).then_some(reason),
            }
        }
        kind::ERROR => EventKind::Error {
            errno: (u32_at(b, body + 4) as i32).saturating_abs(),
            state: state(b[body]),
        },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    let family = match b[off::FAMILY] {
        AF_INET => Family::Inet,
        AF_INET6 => Family::Inet6,
        _ => Family::Unknown,
    };
    let flags = b[off::FLAGS];
    let mut comm = [0u8; 16];
    comm.copy_from_slice(&b[off::COMM..off::COMM + 16]);
    Ok(Event {
        ts_ns: u64_at(b, off::TS),
        sk: u64_at(b, off::SK),
        netns: (flags & hdr_flags::NETNS != 0).then(|| u32_at(b, off::NETNS)),
        cgroup: (flags & hdr_flags::CGROUP != 0).then(|| u64_at(b, off::CGROUP)),
        pid: u32_at(b, off::TGID),
        tid: u32_at(b, off::TID),
        comm: Comm(comm),
        family,
        laddr: addr(family, bytes16(b, off::LADDR)),
        lport: u16_at(b, off::LPORT),
        raddr: addr(family, bytes16(b, off::RADDR)),
        rport: u16_at(b, off::RPORT),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcptrace_common::{Header, ResetRecord, RetransmitRecord, StateRecord, StateSnapRecord};

    fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a `#[repr(C)]` integer-only record with explicit padding,
        // so every byte is initialised.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn hdr(kind: u8) -> Header {
        let mut h = Header {
            kind,
            family: AF_INET,
            flags: hdr_flags::NETNS | hdr_flags::ADDRS | hdr_flags::CGROUP,
            lport: 40000,
            rport: 9527,
            ts_ns: 123_456_789,
            sk: 0xffff_8880_1234_5678,
            netns: 4026531840,
            tgid: 42,
            tid: 43,
            comm: *b"nc\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            cgroup: 0x1_0000_2a3b,
            ..Header::default()
        };
        h.laddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        h.raddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        h
    }

    #[test]
    fn decodes_state_record() {
        let rec = StateRecord {
            hdr: hdr(kind::STATE),
            old: 7,
            new: 2,
            ..Default::default()
        };
        let ev = decode(&as_bytes(&rec), &SnapLayout::default()).unwrap();
        assert_eq!(
            ev.kind,
            EventKind::State {
                old: TcpState::CLOSE,
                new: TcpState::SYN_SENT,
                sock: None
            }
        );
        assert_eq!(ev.laddr.to_string(), "10.0.0.2");
        assert_eq!(ev.raddr.to_string(), "10.0.0.1");
        assert_eq!((ev.lport, ev.rport), (40000, 9527));
        assert_eq!(ev.netns, Some(4026531840));
        assert_eq!(ev.comm.bytes(), b"nc");
        assert_eq!((ev.pid, ev.tid, ev.ts_ns), (42, 43, 123_456_789));
        assert_eq!(ev.sk, 0xffff_8880_1234_5678);
        assert_eq!(ev.cgroup, Some(0x1_0000_2a3b));
    }

    #[test]
    fn decodes_ipv6_and_missing_netns() {
        let mut h = hdr(kind::STATE);
        h.family = AF_INET6;
        h.flags = hdr_flags::ADDRS;
        h.laddr = Ipv6Addr::LOCALHOST.octets();
        let rec = StateRecord {
            hdr: h,
            old: 1,
            new: 4,
            ..Default::default()
        };
        let ev = decode(&as_bytes(&rec), &SnapLayout::default()).unwrap();
        assert_eq!(ev.family, Family::Inet6);
        assert_eq!(ev.laddr.to_string(), "::1");
        assert_eq!(ev.netns, None);
        assert_eq!(ev.cgroup, None);
    }

    #[test]
    fn retransmit_with_error_is_reported_separately() {
        let mut rec = RetransmitRecord {
            hdr: hdr(kind::RETRANSMIT),
            state: 2,
            tcp_flags: 0x02,
            flags: retrans_flags::TCP_FLAGS_VALID | retrans_flags::HAS_ERR,
            err: 0,
            ..Default::default()
        };
        let ev = decode(&as_bytes(&rec), &SnapLayout::default()).unwrap();
        assert!(matches!(
            ev.kind,
            EventKind::Retransmit {
                kind: SegmentKind::Syn,
                from_flags: true,
                ..
            }
        ));
        rec.err = -105;
        let ev = decode(&as_bytes(&rec), &SnapLayout::default()).unwrap();
        assert!(matches!(
            ev.kind,
            EventKind::RetransmitFailed { errno: 105, .. }
        ));
        rec.flags = 0;
        rec.state = 9;
        let ev = decode(&as_bytes(&rec), &SnapLayout::default()).unwrap();
        assert!(matches!(
            ev.kind,
            EventKind::Retransmit {
                kind: SegmentKind::Data,
                from_flags: false,
                ..
            }
        ));
    }

    #[test]
    fn reset_reason_sentinel_is_none() {
        let rec = ResetRecord {
            hdr: hdr(kind::RESET_RECEIVED),
            state: STATE_UNKNOWN,
            reason: REASON_NONE,
            ..Default::default()
        };
        let ev = decode(&as_bytes(&rec), &SnapLayout::default()).unwrap();
        assert_eq!(
            ev.kind,
            EventKind::Reset {
                direction: ResetDirection::Received,
                state: None,
                reason: None
            }
        );
    }

    #[test]
    fn snapshot_records_carry_socket_bytes() {
        let mut rec = StateSnapRecord {
            state: StateRecord {
                hdr: hdr(kind::STATE),
                old: 2,
                new: 1,
                flags: state_flags::SNAPSHOT,
                ..Default::default()
            },
            snap: [0; SNAP_BYTES],
        };
        rec.snap[0] = 7;
        let ev = decode(&as_bytes(&rec), &SnapLayout::default()).unwrap();
        assert!(matches!(ev.kind, EventKind::State { sock: Some(_), .. }));
        rec.state.flags = 0;
        assert_eq!(
            decode(&as_bytes(&rec), &SnapLayout::default()),
            Err(DecodeError::Length(RECORD_SIZE + SNAP_BYTES))
        );
    }

    #[test]
    fn short_long_and_unknown_records_are_errors() {
        let rec = StateRecord {
            hdr: hdr(kind::STATE),
            ..Default::default()
        };
        let bytes = as_bytes(&rec);
        assert_eq!(
            decode(&bytes[..50], &SnapLayout::default()),
            Err(DecodeError::Length(50))
        );
        assert_eq!(
            decode(&[], &SnapLayout::default()),
            Err(DecodeError::Length(0))
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            decode(&long, &SnapLayout::default()),
            Err(DecodeError::Length(RECORD_SIZE + 1))
        );
        let mut unknown = bytes;
        unknown[0] = 200;
        assert_eq!(
            decode(&unknown, &SnapLayout::default()),
            Err(DecodeError::UnknownKind(200))
        );
    }
}
