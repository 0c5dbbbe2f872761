//! The decoded event model: what one kernel record means, independent of how it is printed.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{
    snapshot::SockSnapshot,
    tcp::{SegmentKind, TcpState},
};

/// Address family of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Inet6,
    /// A record whose family could not be read.
    Unknown,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Inet => "ipv4",
            Self::Inet6 => "ipv6",
            Self::Unknown => "unknown",
        }
    }
}

/// A task's `comm`, as the kernel stores it (NUL-padded, at most 15 bytes + NUL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    /// Creates a comm from text, truncated to 15 bytes.
    pub fn new(s: &str) -> Self {
        let mut b = [0u8; 16];
        let n = s.len().min(15);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        Self(b)
    }

    /// The bytes up to the first NUL.
    pub fn bytes(&self) -> &[u8] {
        let n = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        &self.0[..n]
    }

    /// Lossy text form.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

/// Who a reset went to or came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetDirection {
    Sent,
    Received,
}

impl ResetDirection {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

/// The per-kind facts of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `inet_sock_set_state`, with the socket's numbers on the transitions userspace asked for.
    State {
        old: TcpState,
        new: TcpState,
        sock: Option<SockSnapshot>,
    },
    /// A segment retransmitted successfully by `tcp_retransmit_skb`.
    Retransmit {
        state: Option<TcpState>,
        kind: SegmentKind,
        /// Whether `kind` came from the segment's flags (else it is inferred from `state`).
        from_flags: bool,
    },
    /// A retransmission the kernel attempted but could not send (`err != 0`).
    RetransmitFailed {
        state: Option<TcpState>,
        kind: SegmentKind,
        from_flags: bool,
        /// Positive errno.
        errno: i32,
    },
    /// `tcp_retransmit_synack`: the event's socket is the request socket.
    SynAckRetransmit { listener: u64 },
    /// `tcp_send_reset` / `tcp_receive_reset`.
    Reset {
        direction: ResetDirection,
        state: Option<TcpState>,
        /// `enum sk_rst_reason` number when the kernel gives one.
        reason: Option<u32>,
    },
    /// `inet_sk_error_report`: positive errno.
    Error { errno: i32, state: Option<TcpState> },
    /// Userspace fact (sock_diag): what the kernel's socket table held for this 4-tuple right
    /// after the full socket closed from FIN_WAIT2/CLOSING. `state` is `TIME_WAIT`, or
    /// `FIN_WAIT2` for an orphan's timewait socket; `None` when no timewait socket exists.
    TimeWait {
        state: Option<TcpState>,
        timer_ms: Option<u32>,
    },
    /// Userspace fact (sock_diag): the request socket of a half-open handshake (known from its
    /// SYN-ACK retransmits) is gone without a child socket: the handshake expired.
    RequestGone,
    /// Userspace fact (sock_diag dump): a socket that existed when tracing started (`at_exit`
    /// false) or still exists as tracing stops (`at_exit` true). `pid`/`comm` of the event are
    /// the socket's owner from /proc, 0/empty when unknown.
    Existing {
        state: TcpState,
        at_exit: bool,
        sock: Option<SockSnapshot>,
    },
}

impl EventKind {
    /// An error report that reports no error: `tcp_disconnect()` ends with
    /// `sk_error_report()` after `connect()` has read and cleared `sk_err` (6.x: a failed
    /// connect disconnects the socket), so a timed-out or refused connect is followed by a
    /// report of errno 0 in CLOSE. It is a wakeup, not a fact about the connection.
    pub fn is_empty_error_report(&self) -> bool {
        matches!(self, Self::Error { errno: 0, .. })
    }

    /// The JSON `"type"` of the event.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::State { .. } => "state",
            Self::Retransmit { .. } | Self::SynAckRetransmit { .. } => "retransmit",
            Self::RetransmitFailed { .. } => "retransmit_failed",
            Self::Reset { .. } => "reset",
            Self::Error { .. } => "error",
            Self::TimeWait { .. } => "timewait",
            Self::RequestGone => "request_gone",
            Self::Existing { .. } => "existing",
        }
    }
}

/// One kernel fact with the context every record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel socket address (request socket for SYN-ACK retransmits); 0 when unknown.
    pub sk: u64,
    /// Network namespace inode, when known.
    pub netns: Option<u32>,
    /// The socket's cgroup v2 id, when known (full sockets with BTF; a SYN-ACK retransmit
    /// carries its listener's).
    pub cgroup: Option<u64>,
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub kind: EventKind,
}

impl Event {
    /// The task the event names, when there is one: kernel events name the task on the CPU
    /// (pid 0 is then the idle task, `swapper/N`, in softirq); sock_diag facts name none, or
    /// for `existing` the socket's owner from /proc, pid 0 when it could not be found.
    pub fn task(&self) -> Option<(u32, u32, Comm)> {
        let fact = matches!(
            self.kind,
            EventKind::TimeWait { .. } | EventKind::RequestGone | EventKind::Existing { .. }
        );
        (!fact || self.pid != 0).then_some((self.pid, self.tid, self.comm))
    }

    /// The unspecified address of the event's family.
    pub fn unspecified(family: Family) -> IpAddr {
        match family {
            Family::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}
