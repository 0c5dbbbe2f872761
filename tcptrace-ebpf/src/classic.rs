//! Classic tracepoints (tracefs `events/sock|tcp/*`): the fallback for kernels without BTF. The
//! record layout of each comes from its `format` file via the `TP_*` globals; socket fields
//! beyond the record (namespace, TCP flags, state) are added when BTF offsets are known.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tcptrace_common::{
    AF_INET, AF_INET6, ErrorRecord, Header, IPPROTO_TCP, NO_FIELD, REASON_NONE, ResetRecord,
    RetransmitRecord, STATE_UNKNOWN, StateRecord, SynAckRecord, TpLayout, hdr_flags, kind,
    retrans_flags,
};

use crate::{
    emit::{header, header_at, now_ns, state_task, submit, submit_state},
    sock::{self, Probe},
};

/// Reads a `T` at `off` in the raw tracepoint record; `None` when the field is absent.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, off: u16) -> Option<T> {
    if off == NO_FIELD {
        return None;
    }
    // SAFETY: read_at uses bpf_probe_read_kernel, which reports faults instead of taking them.
    unsafe { ctx.read_at::<T>(off as usize).ok() }
}

/// Fills family, ports and addresses from the common `sport/dport/family/saddr/daddr/*_v6`
/// fields most TCP tracepoints share (ports are host order there).
#[inline(always)]
fn fill_addrs(ctx: &TracePointContext, hdr: &mut Header, l: &TpLayout) {
    let Some(family) = field::<u16>(ctx, l.family) else {
        return;
    };
    hdr.family = family as u8;
    hdr.lport = field::<u16>(ctx, l.sport).unwrap_or(0);
    hdr.rport = field::<u16>(ctx, l.dport).unwrap_or(0);
    if hdr.family == AF_INET {
        let s: [u8; 4] = field(ctx, l.saddr).unwrap_or([0; 4]);
        let d: [u8; 4] = field(ctx, l.daddr).unwrap_or([0; 4]);
        hdr.laddr[..4].copy_from_slice(&s);
        hdr.raddr[..4].copy_from_slice(&d);
    } else if hdr.family == AF_INET6 {
        hdr.laddr = field(ctx, l.saddr_v6).unwrap_or([0; 16]);
        hdr.raddr = field(ctx, l.daddr_v6).unwrap_or([0; 16]);
    }
    hdr.flags |= hdr_flags::ADDRS;
}

/// Fills addresses from `tcp_send_reset`'s `sockaddr`-shaped `saddr`/`daddr` (Linux 6.x).
#[inline(always)]
fn fill_sockaddrs(ctx: &TracePointContext, hdr: &mut Header, l: &TpLayout) {
    if l.saddr == NO_FIELD || l.daddr == NO_FIELD {
        return;
    }
    let Some(family) = field::<u16>(ctx, l.saddr) else {
        return;
    };
    hdr.family = family as u8;
    hdr.lport = u16::from_be(field::<u16>(ctx, l.saddr + 2).unwrap_or(0));
    hdr.rport = u16::from_be(field::<u16>(ctx, l.daddr + 2).unwrap_or(0));
    if hdr.family == AF_INET {
        let s: [u8; 4] = field(ctx, l.saddr + 4).unwrap_or([0; 4]);
        let d: [u8; 4] = field(ctx, l.daddr + 4).unwrap_or([0; 4]);
        hdr.laddr[..4].copy_from_slice(&s);
        hdr.raddr[..4].copy_from_slice(&d);
    } else if hdr.family == AF_INET6 {
        hdr.laddr = field(ctx, l.saddr + 8).unwrap_or([0; 16]);
        hdr.raddr = field(ctx, l.daddr + 8).unwrap_or([0; 16]);
    }
    hdr.flags |= hdr_flags::ADDRS;
}

/// Reads a whole layout global (a frozen `.rodata` struct) onto the stack.
macro_rules! layout {
    ($global:ident) => {
        // SAFETY: plain integer struct living for the program's lifetime.
        unsafe { core::ptr::read_volatile(&raw const $crate::globals::$global) }
    };
}

/// `sock/inet_sock_set_state` (Linux 4.16+).
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn tcptrace_tp_set_state(ctx: TracePointContext) -> i32 {
    let l = layout!(TP_SET_STATE);
    if field::<u16>(&ctx, l.protocol) != Some(IPPROTO_TCP) {
        return 0;
    }
    let old = field::<i32>(&ctx, l.oldstate).unwrap_or(-1) as u8;
    let new = field::<i32>(&ctx, l.newstate).unwrap_or(-1) as u8;
    let mut rec = StateRecord {
        hdr: header_at(kind::STATE, now_ns(), state_task(old, new)),
        old,
        new,
        ..StateRecord::default()
    };
    rec.hdr.sk = field::<u64>(&ctx, l.skaddr).unwrap_or(0);
    fill_addrs(&ctx, &mut rec.hdr, &l);
    let sk = rec.hdr.sk;
    sock::fill_netns(Probe, &mut rec.hdr, sk);
    sock::fill_cgroup(Probe, &mut rec.hdr, sk);
    submit_state(Probe, &rec, sk);
    0
}

/// `tcp/tcp_retransmit_skb` (Linux 4.15+; `err` field since 6.9).
#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcptrace_tp_retransmit(ctx: TracePointContext) -> i32 {
    let l = layout!(TP_RETRANSMIT);
    let mut rec = RetransmitRecord {
        hdr: header(kind::RETRANSMIT),
        state: field::<i32>(&ctx, l.state).map_or(STATE_UNKNOWN, |s| s as u8),
        ..RetransmitRecord::default()
    };
    if let Some(err) = field::<i32>(&ctx, l.err) {
        rec.err = err;
        rec.flags |= retrans_flags::HAS_ERR;
    }
    let skb = field::<u64>(&ctx, l.skbaddr).unwrap_or(0);
    if let Some(flags) = sock::skb_tcp_flags(Probe, skb) {
        rec.tcp_flags = flags;
        rec.flags |= retrans_flags::TCP_FLAGS_VALID;
    }
    rec.hdr.sk = field::<u64>(&ctx, l.skaddr).unwrap_or(0);
    fill_addrs(&ctx, &mut rec.hdr, &l);
    let sk = rec.hdr.sk;
    sock::fill_netns(Probe, &mut rec.hdr, sk);
    sock::fill_cgroup(Probe, &mut rec.hdr, sk);
    submit(&rec, &rec.hdr);
    0
}

/// `tcp/tcp_retransmit_synack` (Linux 4.15+).
#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcptrace_tp_synack(ctx: TracePointContext) -> i32 {
    let l = layout!(TP_SYNACK);
    let mut rec = SynAckRecord {
        hdr: header(kind::SYNACK_RETRANSMIT),
        listener: field::<u64>(&ctx, l.skaddr).unwrap_or(0),
    };
    rec.hdr.sk = field::<u64>(&ctx, l.req).unwrap_or(0);
    fill_addrs(&ctx, &mut rec.hdr, &l);
    sock::fill_netns(Probe, &mut rec.hdr, rec.listener);
    sock::fill_cgroup(Probe, &mut rec.hdr, rec.listener);
    submit(&rec, &rec.hdr);
    0
}

/// `tcp/tcp_send_reset` (Linux 4.15+; `reason` since 6.10, `sockaddr` addresses since 6.x).
#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcptrace_tp_send_reset(ctx: TracePointContext) -> i32 {
    let l = layout!(TP_SEND_RESET);
    let mut rec = ResetRecord {
        hdr: header(kind::RESET_SENT),
        state: field::<i32>(&ctx, l.state).map_or(STATE_UNKNOWN, |s| s as u8),
        reason: field::<u32>(&ctx, l.reason).unwrap_or(REASON_NONE),
        ..ResetRecord::default()
    };
    rec.hdr.sk = field::<u64>(&ctx, l.skaddr).unwrap_or(0);
    if l.sockaddr != 0 {
        fill_sockaddrs(&ctx, &mut rec.hdr, &l);
    } else {
        fill_addrs(&ctx, &mut rec.hdr, &l);
    }
    if rec.hdr.sk != 0 {
        let sk = rec.hdr.sk;
        sock::fill_netns(Probe, &mut rec.hdr, sk);
        sock::fill_cgroup_any(Probe, &mut rec.hdr, sk);
    } else {
        let skb = field::<u64>(&ctx, l.skbaddr).unwrap_or(0);
        let mut from_skb = Header::default();
        if sock::fill_from_incoming_skb(Probe, &mut from_skb, skb)
            && from_skb.flags & hdr_flags::NETNS != 0
        {
            rec.hdr.netns = from_skb.netns;
            rec.hdr.flags |= hdr_flags::NETNS;
        }
    }
    submit(&rec, &rec.hdr);
    0
}

/// `tcp/tcp_receive_reset` (Linux 4.15+).
#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcptrace_tp_recv_reset(ctx: TracePointContext) -> i32 {
    let l = layout!(TP_RECV_RESET);
    let mut rec = ResetRecord {
        hdr: header(kind::RESET_RECEIVED),
        reason: REASON_NONE,
        ..ResetRecord::default()
    };
    rec.hdr.sk = field::<u64>(&ctx, l.skaddr).unwrap_or(0);
    rec.state = sock::state(Probe, rec.hdr.sk).unwrap_or(STATE_UNKNOWN);
    fill_addrs(&ctx, &mut rec.hdr, &l);
    let sk = rec.hdr.sk;
    sock::fill_netns(Probe, &mut rec.hdr, sk);
    sock::fill_cgroup(Probe, &mut rec.hdr, sk);
    submit(&rec, &rec.hdr);
    0
}

/// `sock/inet_sk_error_report` (Linux 5.15+). The record has no socket address.
#[tracepoint(category = "sock", name = "inet_sk_error_report")]
pub fn tcptrace_tp_error(ctx: TracePointContext) -> i32 {
    let l = layout!(TP_ERROR);
    if field::<u16>(&ctx, l.protocol) != Some(IPPROTO_TCP) {
        return 0;
    }
    let mut rec = ErrorRecord {
        hdr: header(kind::ERROR),
        state: STATE_UNKNOWN,
        errno: field::<i32>(&ctx, l.error).unwrap_or(0),
        ..ErrorRecord::default()
    };
    fill_addrs(&ctx, &mut rec.hdr, &l);
    submit(&rec, &rec.hdr);
    0
}
