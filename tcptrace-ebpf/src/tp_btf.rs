//! BTF tracepoints (`tp_btf`, Linux 5.5+): the kernel hands us the raw tracepoint arguments,
//! including `struct sock *`, which we read at BTF-resolved offsets. Each hook comes twice:
//! `tcptrace_btf_*` reads the socket with plain loads through its BTF pointer ([`Direct`],
//! the cheap one; it needs `bpf_skc_to_tcp_sock`, Linux 5.9+), `tcptrace_btfprobe_*` with
//! `bpf_probe_read_kernel` ([`Probe`]), which userspace loads when a kernel's verifier refuses
//! the first.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use aya_log_ebpf::debug;
use core::ptr::{read_volatile, write_volatile};

use tcptrace_common::{
    ErrorRecord, IPPROTO_TCP, NO_FIELD, NOTE_SLOTS, REASON_NONE, ResetRecord, RetransmitRecord,
    STATE_UNKNOWN, StateRecord, SynAckRecord, kind, retrans_flags,
};

use crate::{
    emit::{header, header_at, now_ns, state_task, submit, submit_state},
    globals::{NESTED, get},
    sock::{self, Direct, Mem, Probe},
};

/// The two programs of one hook: `$direct` reads through [`Direct`], `$probe` through
/// [`Probe`]; both run `$body`.
macro_rules! hook {
    ($(#[$doc:meta])* $func:literal, $direct:ident, $probe:ident, $body:ident) => {
        $(#[$doc])*
        #[btf_tracepoint(function = $func)]
        pub fn $direct(ctx: BtfTracePointContext) -> i32 {
            $body(Direct, &ctx)
        }

        /// The same, reading memory through `bpf_probe_read_kernel`.
        #[btf_tracepoint(function = $func)]
        pub fn $probe(ctx: BtfTracePointContext) -> i32 {
            $body(Probe, &ctx)
        }
    };
}

hook!(
    /// `trace_inet_sock_set_state(const struct sock *sk, const int oldstate, const int
    /// newstate)`, called from `inet_sk_state_store`/`inet_sk_set_state` (Linux 4.16+). Notes
    /// each event it handles for [`tcptrace_btf_set_state_nested`] (see
    /// [`Nested`](tcptrace_common::Nested)).
    "inet_sock_set_state",
    tcptrace_btf_set_state,
    tcptrace_btfprobe_set_state,
    main_set_state
);

#[inline(always)]
fn main_set_state<M: Mem>(m: M, ctx: &BtfTracePointContext) -> i32 {
    let nested = NESTED.get_ptr_mut(0);
    if let Some(n) = nested {
        // SAFETY: this CPU's slot, from a successful lookup; valid while the program runs.
        // Only the two state-change programs write it, each at most once at a time per CPU;
        // volatile accesses keep the order an interrupt on this CPU observes.
        unsafe {
            write_volatile(&raw mut (*n).busy, 1);
            let depth = read_volatile(&raw const (*n).depth);
            let note = &raw mut (*n).notes[depth as usize & (NOTE_SLOTS - 1)];
            write_volatile(&raw mut (*note).sk, ctx.arg(0));
            write_volatile(&raw mut (*note).transition, transition(ctx));
            write_volatile(&raw mut (*n).depth, depth.wrapping_add(1));
        }
    }
    set_state(m, ctx, now_ns());
    if let Some(n) = nested {
        // SAFETY: as above.
        unsafe { write_volatile(&raw mut (*n).busy, 0) };
    }
    0
}

/// `old << 8 | new` of a state change.
#[inline(always)]
fn transition(ctx: &BtfTracePointContext) -> u32 {
    ((ctx.arg::<u32>(1) & 0xff) << 8) | (ctx.arg::<u32>(2) & 0xff)
}

hook!(
    /// The same tracepoint, attached second (Linux 5.5+): the kernel skips runs of a BTF
    /// tracepoint program nested in itself on one CPU, such as a softirq that interrupts
    /// [`tcptrace_btf_set_state`]. This program writes the record of every state change that
    /// one did not handle, and counts them; the others it leaves alone.
    "inet_sock_set_state",
    tcptrace_btf_set_state_nested,
    tcptrace_btfprobe_set_state_nested,
    nested_set_state
);

#[inline(always)]
fn nested_set_state<M: Mem>(m: M, ctx: &BtfTracePointContext) -> i32 {
    let Some(n) = NESTED.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot, from a successful lookup; valid while the program runs. Only
    // the two state-change programs write it, each at most once at a time per CPU, and a
    // nested run of either completes before the interrupted one continues.
    unsafe {
        if read_volatile(&raw const (*n).busy) != 0 {
            // An interrupt of the main program's run on this CPU: it skipped this event.
            (*n).caught += 1;
            set_state(m, ctx, now_ns());
            return 0;
        }
        let depth = read_volatile(&raw const (*n).depth);
        let sk = ctx.arg::<u64>(0);
        let tr = transition(ctx);
        // Its note is on top, or under those of interrupts that came while this program was
        // starting (their runs of this program were skipped).
        let mut i = 1;
        while i <= NOTE_SLOTS as u32 {
            if i > depth {
                break;
            }
            let note = &raw const (*n).notes[(depth - i) as usize & (NOTE_SLOTS - 1)];
            if read_volatile(&raw const (*note).sk) == sk
                && read_volatile(&raw const (*note).transition) == tr
            {
                write_volatile(&raw mut (*n).depth, depth - i);
                return 0;
            }
            i += 1;
        }
        (*n).caught += 1;
        set_state(m, ctx, now_ns());
        // Notes pushed while this ran are of interrupts whose runs of this program the kernel
        // skipped: the main program handled them, nobody will take them.
        write_volatile(&raw mut (*n).depth, depth);
    }
    0
}

/// One state change of a TCP socket into a record stamped `ts_ns`.
#[inline(always)]
fn set_state<M: Mem>(m: M, ctx: &BtfTracePointContext, ts_ns: u64) {
    let sk: u64 = ctx.arg(0);
    if sock::protocol(m, sk) != Some(IPPROTO_TCP) {
        return;
    }
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    let mut rec = StateRecord {
        hdr: header_at(kind::STATE, ts_ns, state_task(old as u8, new as u8)),
        old: old as u8,
        new: new as u8,
        ..StateRecord::default()
    };
    rec.hdr.sk = sk;
    let full = sock::fill_from_sock(m, &mut rec.hdr, sk);
    if full.is_none() {
        // Compiled in, but dead unless `--log-level debug` sets AYA_LOG_LEVEL at load time.
        // (The socket's address cannot be printed: the verifier keeps pointers out of logs.)
        debug!(
            ctx,
            target: "tcptrace_ebpf",
            "inet_sock_set_state {} -> {}: the socket's sock_common was unreadable",
            old,
            new
        );
    }
    if !submit_state(m, &rec, full.unwrap_or(0)) {
        debug!(
            ctx,
            target: "tcptrace_ebpf",
            "inet_sock_set_state {} -> {}: ring buffer full, record dropped (counted)",
            old,
            new
        );
    }
}

hook!(
    /// `trace_tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err)`
    /// from `__tcp_retransmit_skb` (Linux 4.15+; `err` since 6.9, detected from the tracefs
    /// format).
    "tcp_retransmit_skb",
    tcptrace_btf_retransmit,
    tcptrace_btfprobe_retransmit,
    retransmit
);

#[inline(always)]
fn retransmit<M: Mem>(m: M, ctx: &BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    let mut rec = RetransmitRecord {
        hdr: header(kind::RETRANSMIT),
        state: sock::state(m, sk).unwrap_or(STATE_UNKNOWN),
        ..RetransmitRecord::default()
    };
    if get!(TP_RETRANSMIT.err) != NO_FIELD {
        rec.err = ctx.arg::<i32>(2);
        rec.flags |= retrans_flags::HAS_ERR;
    }
    if let Some(flags) = sock::skb_tcp_flags(m, skb) {
        rec.tcp_flags = flags;
        rec.flags |= retrans_flags::TCP_FLAGS_VALID;
    }
    rec.hdr.sk = sk;
    sock::fill_from_sock(m, &mut rec.hdr, sk);
    submit(&rec, &rec.hdr);
    0
}

hook!(
    /// `trace_tcp_retransmit_synack(const struct sock *sk, const struct request_sock *req)`
    /// from `tcp_rtx_synack` (Linux 4.15+). The request socket starts with its `sock_common`.
    "tcp_retransmit_synack",
    tcptrace_btf_synack,
    tcptrace_btfprobe_synack,
    synack
);

#[inline(always)]
fn synack<M: Mem>(m: M, ctx: &BtfTracePointContext) -> i32 {
    let listener: u64 = ctx.arg(0);
    let req: u64 = ctx.arg(1);
    let mut rec = SynAckRecord {
        hdr: header(kind::SYNACK_RETRANSMIT),
        listener,
    };
    rec.hdr.sk = req;
    sock::fill_from_sock(m, &mut rec.hdr, req);
    // A request socket has no cgroup of its own; the child will inherit the listener's.
    sock::fill_cgroup(m, &mut rec.hdr, listener);
    submit(&rec, &rec.hdr);
    0
}

hook!(
    /// `trace_tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, enum
    /// sk_rst_reason)` from `tcp_v{4,6}_send_reset` and `tcp_send_active_reset` (Linux 4.15+;
    /// `reason` since 6.10). `sk` may be NULL (no socket for the packet), then the addresses
    /// come from `skb`; or a request or timewait socket.
    "tcp_send_reset",
    tcptrace_btf_send_reset,
    tcptrace_btfprobe_send_reset,
    send_reset
);

#[inline(always)]
fn send_reset<M: Mem>(m: M, ctx: &BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    let mut rec = ResetRecord {
        hdr: header(kind::RESET_SENT),
        state: STATE_UNKNOWN,
        reason: REASON_NONE,
        ..ResetRecord::default()
    };
    if get!(TP_SEND_RESET.reason) != NO_FIELD {
        rec.reason = ctx.arg::<u32>(2);
    }
    if sk != 0 {
        rec.hdr.sk = sk;
        rec.state = sock::state(m, sk).unwrap_or(STATE_UNKNOWN);
        sock::fill_from_sock(m, &mut rec.hdr, sk);
    } else if skb != 0 && !sock::fill_from_incoming_skb(m, &mut rec.hdr, skb) {
        debug!(
            ctx,
            target: "tcptrace_ebpf",
            "tcp_send_reset (reason {}): the packet's headers were unreadable",
            rec.reason
        );
    }
    submit(&rec, &rec.hdr);
    0
}

hook!(
    /// `trace_tcp_receive_reset(struct sock *sk)` from `tcp_reset` (Linux 4.15+).
    "tcp_receive_reset",
    tcptrace_btf_recv_reset,
    tcptrace_btfprobe_recv_reset,
    recv_reset
);

#[inline(always)]
fn recv_reset<M: Mem>(m: M, ctx: &BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let mut rec = ResetRecord {
        hdr: header(kind::RESET_RECEIVED),
        state: sock::state(m, sk).unwrap_or(STATE_UNKNOWN),
        reason: REASON_NONE,
        ..ResetRecord::default()
    };
    rec.hdr.sk = sk;
    sock::fill_from_sock(m, &mut rec.hdr, sk);
    submit(&rec, &rec.hdr);
    0
}

hook!(
    /// `trace_inet_sk_error_report(const struct sock *sk)` from `sk_error_report` (Linux
    /// 5.15+).
    "inet_sk_error_report",
    tcptrace_btf_error,
    tcptrace_btfprobe_error,
    error
);

#[inline(always)]
fn error<M: Mem>(m: M, ctx: &BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    if sock::protocol(m, sk) != Some(IPPROTO_TCP) {
        return 0;
    }
    let mut rec = ErrorRecord {
        hdr: header(kind::ERROR),
        state: sock::state(m, sk).unwrap_or(STATE_UNKNOWN),
        errno: m.read::<i32>(sk, get!(OFFSETS.sk_err)).unwrap_or(0),
        ..ErrorRecord::default()
    };
    rec.hdr.sk = sk;
    sock::fill_from_sock(m, &mut rec.hdr, sk);
    submit(&rec, &rec.hdr);
    0
}
