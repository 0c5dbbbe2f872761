//! The kernel's socket table through sock_diag netlink (what `ss` uses), per network
//! namespace: exact lookups by 4-tuple and dumps by state, with `tcp_info`.
mod facts;
mod netns;
mod owners;
mod sockdiag;

pub use facts::{kernel_hz, read_namespace, read_tcpext};
pub use netns::{NetnsPaths, netns_names, netns_paths, spawn_in_netns};
pub use owners::socket_owners;
pub use sockdiag::NetnsDiag;

use std::net::IpAddr;

/// 4-tuple as the local side sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
}

/// The part of `struct tcp_info` (INET_DIAG_INFO) tcptrace uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub rtt_us: u32,
    pub total_retrans: u32,
    pub snd_mss: u32,
    pub advmss: u32,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub sack: bool,
    pub timestamps: bool,
    pub wscale: bool,
}

/// One socket as inet_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSock {
    pub tuple: Tuple,
    /// Kernel TCP state number; a timewait socket reports its substate (TIME_WAIT or
    /// FIN_WAIT2), a request socket SYN_RECV.
    pub state: u8,
    /// Remaining time of the pending timer in ms (`idiag_expires`), when one is pending.
    pub timer_ms: Option<u32>,
    /// `idiag_timer`: 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe.
    pub timer: u8,
    pub inode: u32,
    pub uid: u32,
    /// `idiag_rqueue`: for a listener, connections waiting for accept().
    pub rqueue: u32,
    /// `idiag_wqueue`: for a listener, its accept queue size (backlog capped by somaxconn).
    pub wqueue: u32,
    pub cookie: u64,
    /// The socket's cgroup v2 id (`INET_DIAG_CGROUP_ID`, Linux 5.9+; full sockets only).
    pub cgroup: Option<u64>,
    /// A timewait or request socket rather than a full one. We always ask for
    /// INET_DIAG_INFO, which the kernel attaches to full sockets only.
    pub mini: bool,
    pub info: Option<TcpInfo>,
}
