//! Ring-buffer records: one common [`Header`] followed by a per-kind body, all 96 bytes long.

/// Kind byte at the start of every record.
pub mod kind {
    /// `sock:inet_sock_set_state` for a TCP socket.
    pub const STATE: u8 = 1;
    /// `tcp:tcp_retransmit_skb`.
    pub const RETRANSMIT: u8 = 2;
    /// `tcp:tcp_retransmit_synack` (the `sk` of the header is the request socket).
    pub const SYNACK_RETRANSMIT: u8 = 3;
    /// `tcp:tcp_send_reset`.
    pub const RESET_SENT: u8 = 4;
    /// `tcp:tcp_receive_reset`.
    pub const RESET_RECEIVED: u8 = 5;
    /// `sock:inet_sk_error_report` for a TCP socket.
    pub const ERROR: u8 = 6;
}

/// Bits of [`Header::flags`].
pub mod hdr_flags {
    /// `netns` holds the socket's network namespace inode.
    pub const NETNS: u8 = 1 << 0;
    /// The addresses and ports are known (a reset sent for an unparsable packet has none).
    pub const ADDRS: u8 = 1 << 1;
    /// `cgroup` holds the id of the socket's cgroup v2 (full sockets only: request and
    /// timewait sockets carry none).
    pub const CGROUP: u8 = 1 << 2;
    /// The socket's cgroup is the `--cgroup` filter's or one below it (set only while that
    /// filter is on; the in-kernel filter keeps only such records).
    pub const IN_CGROUP: u8 = 1 << 3;
}

/// `IPPROTO_TCP`, as in `sk_protocol` and tracepoint `protocol` fields.
pub const IPPROTO_TCP: u16 = 6;

/// Address family values as the kernel uses them.
pub const AF_INET: u8 = 2;
/// Address family values as the kernel uses them.
pub const AF_INET6: u8 = 10;

/// Fields every record carries. Addresses are in network byte order (IPv4 in the first four
/// bytes), ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub family: u8,
    pub flags: u8,
    pub _pad0: u8,
    pub lport: u16,
    pub rport: u16,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// Kernel address of the socket (request socket for SYN-ACK retransmits); 0 when unknown.
    pub sk: u64,
    pub netns: u32,
    /// Current task when the event fired; in softirq context this is whoever was interrupted.
    pub tgid: u32,
    pub tid: u32,
    pub _pad1: u32,
    pub comm: [u8; 16],
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    /// The socket's cgroup v2 id (`sk->sk_cgrp_data` → `cgroup->kn->id`, the cgroup
    /// directory's inode number), valid with [`hdr_flags::CGROUP`]. Taken from the socket,
    /// which keeps the cgroup of the task that created it (a listener's for accepted ones).
    pub cgroup: u64,
}

/// Value of a state byte when the kernel gave none (e.g. classic `inet_sk_error_report`).
pub const STATE_UNKNOWN: u8 = 0xff;

/// Bits of [`StateRecord::flags`].
pub mod state_flags {
    /// The record is a [`StateSnapRecord`](super::StateSnapRecord): socket bytes follow.
    pub const SNAPSHOT: u8 = 1 << 0;
}

/// `inet_sock_set_state`: `old` → `new` (kernel `TCP_*` numbers).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateRecord {
    pub hdr: Header,
    pub old: u8,
    pub new: u8,
    pub flags: u8,
    pub _pad: [u8; 5],
}

/// Number of socket windows a snapshot copies (see [`SnapPlan`](crate::SnapPlan)).
pub const SNAP_WINDOWS: usize = 16;
/// Bytes per snapshot window.
pub const SNAP_WINDOW_LEN: usize = 16;
/// Bytes of socket memory a snapshot carries.
pub const SNAP_BYTES: usize = SNAP_WINDOWS * SNAP_WINDOW_LEN;

/// A state change with raw bytes of the socket copied at the moment of the change: window `i`
/// of the plan lands at `snap[i * SNAP_WINDOW_LEN..]`. Userspace knows which fields those are.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSnapRecord {
    pub state: StateRecord,
    pub snap: [u8; SNAP_BYTES],
}

/// Bits of [`RetransmitRecord::flags`].
pub mod retrans_flags {
    /// `tcp_flags` was read from the segment's `tcp_skb_cb`.
    pub const TCP_FLAGS_VALID: u8 = 1 << 0;
    /// `err` is meaningful (the tracepoint has an `err` field).
    pub const HAS_ERR: u8 = 1 << 1;
}

/// `tcp_retransmit_skb`: the socket state, the segment's TCP flags and the attempt's result.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitRecord {
    pub hdr: Header,
    pub state: u8,
    pub tcp_flags: u8,
    pub flags: u8,
    pub _pad: u8,
    /// Result of the attempt (0 = sent, negative errno = not sent).
    pub err: i32,
}

/// `tcp_retransmit_synack`: `hdr.sk` is the request socket, `listener` the listening socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynAckRecord {
    pub hdr: Header,
    pub listener: u64,
}

/// Sentinel in [`ResetRecord::reason`] when the kernel gave no reason.
pub const REASON_NONE: u32 = u32::MAX;

/// `tcp_send_reset` / `tcp_receive_reset` (direction is in `hdr.kind`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetRecord {
    pub hdr: Header,
    pub state: u8,
    pub _pad: [u8; 3],
    /// `enum sk_rst_reason` value, or [`REASON_NONE`].
    pub reason: u32,
}

/// `inet_sk_error_report`: the error now set on the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorRecord {
    pub hdr: Header,
    pub state: u8,
    pub _pad: [u8; 3],
    /// Positive errno (`sk->sk_err`).
    pub errno: i32,
}

/// Per-CPU map (one [`Nested`] slot) shared by the two state-change programs.
pub const NESTED_MAP: &str = "NESTED";

/// How runs of the state-change program that the kernel skipped are caught. A BTF tracepoint
/// program does not run nested in itself on one CPU (the kernel counts the skipped run in its
/// `recursion_misses`): the state changes of a softirq that interrupts it (one run on the way
/// out of a timer interrupt, say) would be lost. A second program, attached after it to the
/// same tracepoint, handles every event the first did not:
/// - while the first program runs on this CPU (`busy`), every event the second one sees
///   happened in an interrupt of that run, so the first was skipped: the second writes it;
/// - otherwise the first program noted its event on top of a small per-CPU stack, and the
///   second takes the note away when it is its own event; when it is not, the first was
///   skipped (an interrupt that landed in the instants around its run) and the second writes
///   the event. After writing, it drops notes pushed meanwhile: events of interrupts of its own
///   run, which the first program handled and whose runs of the second the kernel skipped.
///
/// So the second program writes an event only when the first did not: `caught` never counts
/// an event twice, and skipped runs less caught ones are exactly the events lost. (A note
/// can only be left behind by an interrupt in the instants around a run of the second program;
/// if such a note named the very socket and transition of a later skipped event, that event
/// would be counted lost, never silently dropped.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nested {
    /// 1 while the main program runs on this CPU.
    pub busy: u32,
    /// Notes pushed and not taken: the top one is `notes[(depth - 1) % NOTE_SLOTS]`.
    pub depth: u32,
    pub notes: [Note; NOTE_SLOTS],
    /// Events the second program handled because the main one had not: each is one of the
    /// main program's `recursion_misses`, caught.
    pub caught: u64,
}

/// Places on a CPU's note stack: more than the contexts that can nest there (task, softirq,
/// hardirq, NMI), so live notes are never overwritten; a power of two.
pub const NOTE_SLOTS: usize = 8;

/// One state change the main program handled: what tells it from another on this CPU (the
/// socket and the transition; one socket's state changes never nest, it is locked).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Note {
    pub sk: u64,
    /// `old << 8 | new`.
    pub transition: u32,
    pub _pad: u32,
}

/// Size of every record in the ring buffer.
pub const RECORD_SIZE: usize = 104;

const _: () = {
    assert!(core::mem::size_of::<Header>() == 96);
    assert!(core::mem::size_of::<StateRecord>() == RECORD_SIZE);
    assert!(core::mem::size_of::<RetransmitRecord>() == RECORD_SIZE);
    assert!(core::mem::size_of::<SynAckRecord>() == RECORD_SIZE);
    assert!(core::mem::size_of::<ResetRecord>() == RECORD_SIZE);
    assert!(core::mem::size_of::<ErrorRecord>() == RECORD_SIZE);
    assert!(core::mem::size_of::<StateSnapRecord>() == RECORD_SIZE + SNAP_BYTES);
    assert!(core::mem::size_of::<Note>() == 16);
    assert!(core::mem::size_of::<Nested>() == 8 + 16 * NOTE_SLOTS + 8);
    assert!(NOTE_SLOTS.is_power_of_two());
};
