//! One connection's lifecycle as it is being reconstructed, and what its finished record holds.
use std::net::IpAddr;

pub use super::visits::{Visit, Visits};
use crate::{
    event::{Comm, Event, Family},
    snapshot::{Field, SockSnapshot},
    tcp::{SegmentKind, TcpState},
};

/// Who opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Active open: this side called `connect()`.
    Client,
    /// Passive open: a listener accepted it.
    Server,
    /// The connection predates what we saw and its first states do not tell.
    Unknown,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
            Self::Unknown => "unknown",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Client, Self::Server, Self::Unknown]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Orderly FIN exchange.
    Closed,
    /// This side aborted with a RST.
    ResetSent,
    /// The peer aborted with a RST.
    ResetReceived,
    /// The connect was answered with a RST.
    Refused,
    /// A timer gave up (SYN, SYN-ACK, data or FIN retransmissions, keepalive).
    Timeout,
    /// Closed without FIN exchange, RST or timeout (e.g. `close()` during `connect()`).
    Aborted,
    /// Still alive when tracing stopped (or no longer tracked, see notes).
    Open,
}

impl End {
    pub const ALL: [Self; 7] = [
        Self::Closed,
        Self::ResetSent,
        Self::ResetReceived,
        Self::Refused,
        Self::Timeout,
        Self::Aborted,
        Self::Open,
    ];

    /// The ends that mean the connection failed: everything but an orderly close and still
    /// being open.
    pub fn failed(self) -> bool {
        !matches!(self, Self::Closed | Self::Open)
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::ResetSent => "reset_sent",
            Self::ResetReceived => "reset_received",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Aborted => "aborted",
            Self::Open => "open",
        }
    }
}

/// A process as the kernel named it at the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: Comm,
}

impl Owner {
    pub fn of(ev: &Event) -> Self {
        Self {
            pid: ev.pid,
            comm: ev.comm,
        }
    }
}

/// Things the record must admit about itself (bit set in [`Conn::notes`]).
pub mod note {
    /// The connection existed before tracing started (from the sock_diag seed).
    pub const PREEXISTING: u16 = 1 << 0;
    /// Its first transitions were not seen (started before tracing, or events were lost).
    pub const MISSED_START: u16 = 1 << 1;
    /// A transition did not continue from the state we had: events in between were missed.
    pub const MISSED_EVENTS: u16 = 1 << 2;
    /// A new connection reused the socket before this one's CLOSE was seen.
    pub const MISSED_CLOSE: u16 = 1 << 3;
    /// Dropped from the table to bound memory; the record is what was known then.
    pub const EVICTED: u16 = 1 << 4;
    /// Went to a timewait socket, but sock_diag could not confirm it in time.
    pub const TIME_WAIT_UNCONFIRMED: u16 = 1 << 5;
    /// A half-open handshake known only from its request socket (no full socket was made).
    pub const HALF_OPEN: u16 = 1 << 6;
    /// Closed from FIN_WAIT2/CLOSING, but the kernel kept no timewait socket for it.
    pub const NO_TIME_WAIT: u16 = 1 << 7;
    /// The kernel lost events (of unknown sockets) while this connection was open: it may be
    /// missing a transition, retransmit, reset or error.
    pub const LOST_EVENTS: u16 = 1 << 8;

    pub const ALL: [(u16, &str); 9] = [
        (PREEXISTING, "preexisting"),
        (MISSED_START, "missed_start"),
        (MISSED_EVENTS, "missed_events"),
        (MISSED_CLOSE, "missed_close"),
        (EVICTED, "evicted"),
        (TIME_WAIT_UNCONFIRMED, "time_wait_unconfirmed"),
        (HALF_OPEN, "half_open"),
        (NO_TIME_WAIT, "no_time_wait"),
        (LOST_EVENTS, "lost_events"),
    ];
}

/// Number of `SegmentKind`s counted separately.
pub const SEGMENT_KINDS: usize = SegmentKind::ALL.len();
/// Highest TCP state number counted per state (`TCP_NEW_SYN_RECV`).
pub const STATE_SLOTS: usize = 13;

/// Retransmissions by state and segment kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retransmits {
    pub total: u32,
    /// Attempts the kernel could not send (`err != 0`).
    pub failed: u32,
    pub by_state: [u16; STATE_SLOTS],
    pub by_kind: [u16; SEGMENT_KINDS],
    /// When the first, the second and the latest retransmission happened (the second is the
    /// first RTO retransmission when a tail loss probe came first).
    pub first_ns: Option<u64>,
    pub second_ns: Option<u64>,
    pub last_ns: Option<u64>,
}

impl Retransmits {
    pub fn add(&mut self, state: TcpState, kind: SegmentKind, ts_ns: u64) {
        self.total += 1;
        if self.first_ns.is_some() && self.second_ns.is_none() {
            self.second_ns = Some(ts_ns);
        }
        self.first_ns.get_or_insert(ts_ns);
        self.last_ns = Some(ts_ns);
        if let Some(c) = self.by_state.get_mut(state.0 as usize) {
            *c = c.saturating_add(1);
        }
        if let Some(c) = self.by_kind.get_mut(kind as usize) {
            *c = c.saturating_add(1);
        }
    }

    /// `(state, count)` for every state with retransmits, in state-number order.
    pub fn states(&self) -> impl Iterator<Item = (TcpState, u16)> + '_ {
        self.by_state
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (TcpState(s as u8), *n))
    }

    pub fn kinds(&self) -> impl Iterator<Item = (SegmentKind, u16)> + '_ {
        SegmentKind::ALL
            .into_iter()
            .filter_map(|k| Some((k, *self.by_kind.get(k as usize)?)))
            .filter(|(_, n)| *n > 0)
    }

    pub fn merge(&mut self, other: &Retransmits) {
        self.total += other.total;
        self.failed += other.failed;
        for (a, b) in self.by_state.iter_mut().zip(other.by_state) {
            *a = a.saturating_add(b);
        }
        for (a, b) in self.by_kind.iter_mut().zip(other.by_kind) {
            *a = a.saturating_add(b);
        }
        let mut all: Vec<u64> = [
            self.first_ns,
            self.second_ns,
            other.first_ns,
            other.second_ns,
        ]
        .into_iter()
        .flatten()
        .collect();
        all.sort_unstable();
        self.second_ns = all.get(1).copied();
        self.first_ns = match (self.first_ns, other.first_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ns = self.last_ns.max(other.last_ns);
    }
}

/// Options negotiated in the handshake, from the socket at ESTABLISHED.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub mss: Option<u16>,
    pub snd_wscale: Option<u8>,
    pub rcv_wscale: Option<u8>,
    pub sack: Option<bool>,
    pub timestamps: Option<bool>,
}

impl Options {
    pub fn from_snapshot(s: &SockSnapshot) -> Self {
        let wscale = s.get(Field::WscaleOk);
        let scale = |f| match wscale {
            Some(0) => Some(0),
            _ => s.get(f).map(|v| v as u8),
        };
        Self {
            mss: s.get(Field::MssClamp).map(|v| v as u16),
            snd_wscale: scale(Field::SndWscale),
            rcv_wscale: scale(Field::RcvWscale),
            sack: s.get(Field::Sack).map(|v| v != 0),
            timestamps: s.get(Field::Timestamps).map(|v| v != 0),
        }
    }

    pub fn is_known(&self) -> bool {
        *self != Self::default()
    }
}

/// The parts of a record most open connections never need: retransmits, resets, errors, who
/// closed it, the socket's numbers at the end, its timewait socket. Boxed on first use, so an
/// idle open connection costs only its hot fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cold {
    pub retransmits: Retransmits,
    pub resets_sent: u16,
    pub resets_received: u16,
    /// Kernel reason of the first reset, when it had one.
    pub reset_reason: Option<u32>,
    /// First socket error (positive errno).
    pub error: Option<i32>,
    pub closer: Option<Owner>,
    /// The task on the CPU at the CLOSE transition (candidate closer for aborts).
    pub close_task: Option<Owner>,
    /// Socket numbers at the end (or the latest known).
    pub sock: Option<SockSnapshot>,
    /// Timewait socket the kernel handed the connection to: its state and timer (at the look
    /// that settled it: the first, or for a FIN_WAIT2 hand-off the one that saw it change).
    pub time_wait: Option<(TcpState, Option<u32>)>,
    /// A hand-off in FIN_WAIT2: what the later looks at the timewait socket saw.
    pub fin_wait2: Option<FinWait2Watch>,
}

/// A connection handed to a timewait socket in FIN_WAIT2 (our FIN acknowledged, the peer's
/// not yet received) is watched with further sock_diag looks until the socket becomes
/// TIME_WAIT (the peer's FIN came: an orderly close) or disappears (its timer expired, or a
/// reset ended it). Every look is a recorded `timewait` fact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinWait2Watch {
    /// The first look: when, and the timer it reported.
    pub first_ns: u64,
    pub timer_ms: Option<u32>,
    /// The latest look that still found it in FIN_WAIT2.
    pub last_seen_ns: u64,
    /// The look that found it gone.
    pub gone_ns: Option<u64>,
}

impl FinWait2Watch {
    /// When its timer runs out, as the first look reported it.
    pub fn expires_ns(&self) -> Option<u64> {
        Some(self.first_ns + u64::from(self.timer_ms?) * 1_000_000)
    }
}

/// What [`Conn::cold`] shows for a connection that has none.
static NO_COLD: Cold = Cold {
    retransmits: Retransmits {
        total: 0,
        failed: 0,
        by_state: [0; STATE_SLOTS],
        by_kind: [0; SEGMENT_KINDS],
        first_ns: None,
        second_ns: None,
        last_ns: None,
    },
    resets_sent: 0,
    resets_received: 0,
    reset_reason: None,
    error: None,
    closer: None,
    close_task: None,
    sock: None,
    time_wait: None,
    fin_wait2: None,
};

/// A connection being tracked, and (once finished) its record.
#[derive(Clone, Debug, PartialEq)]
pub struct Conn {
    /// Unique per table run, in order of first sight.
    pub id: u64,
    pub sk: u64,
    pub netns: Option<u32>,
    /// The socket's cgroup v2 id, from the first event that carried one.
    pub cgroup: Option<std::num::NonZeroU64>,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub role: Role,
    /// When the lifecycle began (None: before we saw it).
    pub start_ns: Option<u64>,
    /// Last event that touched it.
    pub last_ns: u64,
    /// States in order; the last one is the current state (CLOSE once closed).
    pub visits: Visits,
    pub owner: Option<Owner>,
    pub options: Options,
    /// Everything else; see [`Conn::cold`] and [`Conn::cold_mut`].
    cold: Option<Box<Cold>>,
    pub notes: u16,
    pub end: Option<End>,
    /// When the full socket closed (or tracing stopped).
    pub end_ns: Option<u64>,
}

impl Conn {
    pub fn new(id: u64, ev: &Event, role: Role) -> Self {
        Self {
            id,
            sk: ev.sk,
            netns: ev.netns,
            cgroup: ev.cgroup.and_then(std::num::NonZeroU64::new),
            family: ev.family,
            laddr: ev.laddr,
            lport: ev.lport,
            raddr: ev.raddr,
            rport: ev.rport,
            role,
            start_ns: None,
            last_ns: ev.ts_ns,
            visits: Visits::default(),
            owner: None,
            options: Options::default(),
            cold: None,
            notes: 0,
            end: None,
            end_ns: None,
        }
    }

    /// Retransmits, resets, errors, closer, end snapshot, timewait socket (all empty when the
    /// connection had none of them).
    pub fn cold(&self) -> &Cold {
        self.cold.as_deref().unwrap_or(&NO_COLD)
    }

    /// The cold part, allocated on first write.
    pub fn cold_mut(&mut self) -> &mut Cold {
        self.cold.get_or_insert_default()
    }

    /// The current state.
    pub fn state(&self) -> Option<TcpState> {
        self.visits.last().map(|v| v.state)
    }

    /// Refreshes the addresses from an event that knows them (a client's local port is only
    /// bound after its first transition).
    pub fn update_addrs(&mut self, ev: &Event) {
        if ev.family != Family::Unknown && (ev.lport != 0 || self.lport == 0) {
            self.family = ev.family;
            self.laddr = ev.laddr;
            self.lport = ev.lport;
            self.raddr = ev.raddr;
            self.rport = ev.rport;
        }
        if self.netns.is_none() {
            self.netns = ev.netns;
        }
        if self.cgroup.is_none() {
            self.cgroup = ev.cgroup.and_then(std::num::NonZeroU64::new);
        }
    }

    pub fn enter(&mut self, state: TcpState, ts_ns: u64) {
        self.visits.push(Visit {
            state,
            since_ns: Some(ts_ns),
        });
    }

    /// Time spent in each visited state; the state in force at `end_ns` runs until then.
    /// CLOSE (the end marker) is not listed.
    pub fn spans(&self) -> impl Iterator<Item = (TcpState, Option<u64>)> + '_ {
        let end = self.end_ns;
        self.visits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.state != TcpState::CLOSE)
            .map(move |(i, v)| {
                // The next state's entry ends this one; an unknown entry leaves it unknown.
                let until = match self.visits.get(i + 1) {
                    Some(n) => n.since_ns,
                    None => end,
                };
                let ns = match (v.since_ns, until) {
                    (Some(a), Some(b)) if b >= a => Some(b - a),
                    _ => None,
                };
                (v.state, ns)
            })
    }

    /// Whole lifetime, when its start is known.
    pub fn duration_ns(&self) -> Option<u64> {
        Some(self.end_ns?.saturating_sub(self.start_ns?))
    }

    pub fn visited(&self, s: TcpState) -> bool {
        self.visits.iter().any(|v| v.state == s)
    }

    pub fn has_note(&self, n: u16) -> bool {
        self.notes & n != 0
    }

    /// Note names, in a fixed order.
    pub fn note_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        note::ALL
            .into_iter()
            .filter(|(bit, _)| self.notes & bit != 0)
            .map(|(_, n)| n)
    }

    /// Whether our FIN was acknowledged (it takes one sequence number in `bytes_acked`).
    fn fin_acked(&self) -> bool {
        self.visited(TcpState::FIN_WAIT2)
            || (self.visited(TcpState::LAST_ACK) && self.end == Some(End::Closed))
            || (self.visited(TcpState::CLOSING) && self.cold().time_wait.is_some())
    }

    /// Whether the full socket received the peer's FIN (one sequence number in
    /// `bytes_received`). A FIN that reached the timewait socket after a FIN_WAIT2 hand-off
    /// came too late to be counted.
    fn fin_received(&self) -> bool {
        self.visited(TcpState::CLOSE_WAIT)
            || self.visited(TcpState::CLOSING)
            || (self.cold().fin_wait2.is_none()
                && self
                    .cold()
                    .time_wait
                    .is_some_and(|(s, _)| s == TcpState::TIME_WAIT))
    }

    /// Payload bytes the peer acknowledged: `tcp_sock.bytes_acked` less the sequence numbers
    /// of our SYN (active open) and FIN.
    pub fn bytes_sent(&self) -> Option<u64> {
        let raw = self.cold().sock?.get(Field::BytesAcked)?;
        let syn = u64::from(self.role == Role::Client && self.visited(TcpState::ESTABLISHED));
        Some(raw.saturating_sub(syn + u64::from(self.fin_acked())))
    }

    /// Payload bytes received in order: `tcp_sock.bytes_received` less the peer's FIN.
    pub fn bytes_received(&self) -> Option<u64> {
        let raw = self.cold().sock?.get(Field::BytesReceived)?;
        Some(raw.saturating_sub(u64::from(self.fin_received())))
    }

    /// Smoothed RTT; None when the kernel has no sample (`srtt_us` 0: never acknowledged).
    pub fn srtt_us(&self) -> Option<u64> {
        self.cold().sock?.get(Field::SrttUs).filter(|us| *us != 0)
    }
}

// What an idle open connection costs the table (inline part; its map slot is a pointer): a
// growing record here is a memory regression for every host with many connections.
const _: () = assert!(std::mem::size_of::<Conn>() <= 224);
