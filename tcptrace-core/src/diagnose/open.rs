//! Rules for connections that failed while opening or while open: connect timeout, refusal
//! and local port exhaustion, half-open handshakes, data retransmission timeout, keepalive.
use super::{
    Diagnosis, Inputs, Severity, Value, close_enough, first_rto_ms, jiffies_override, orphan, peer,
    sock_value,
};
use crate::{
    budget::{self, DataRto, SynSent, secs},
    lifecycle::{Conn, End, Role, end::state_before_close, note},
    snapshot::Field,
    sysctl::{self as sc, Sysctls},
    tcp::{SegmentKind, TcpState},
};

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// The retransmit limit of an active open and whether the socket set its own.
fn syn_retries(c: &Conn, sys: &Sysctls) -> (u32, Option<u64>) {
    let own = sock_value(c, Field::SynRetries);
    let n = own.unwrap_or(sys.int_or_default(sc::SYN_RETRIES).max(0) as u64) as u32;
    (n, own)
}

fn user_timeout(c: &Conn) -> Option<u64> {
    sock_value(c, Field::UserTimeoutMs)
}

fn add_user_timeout(d: &mut Diagnosis, ut: Option<u64>) {
    if let Some(ut) = ut {
        d.overrides.push(("TCP_USER_TIMEOUT", format!("{ut} ms")));
    }
}

/// Active opens that never reached ESTABLISHED: SYN timeout, refusal, no local port.
/// A connect that ended without ever being established.
fn failed_connect(c: &Conn) -> Option<End> {
    if c.role != Role::Client || c.visited(TcpState::ESTABLISHED) {
        return None;
    }
    c.end
}

/// `connect()` timed out: SYN retransmits until the budget ran out.
pub fn connect_timeout(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    if failed_connect(c) == Some(End::Timeout) {
        syn_timeout(c, inp.sys, out);
    }
}

/// `connect()` was answered with a RST.
pub fn refused(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    if failed_connect(c) != Some(End::Refused) {
        return;
    }
    let mut d = Diagnosis::new("refused", Severity::Warning, inp.sys);
    d.observed.push((
        "resets_received",
        u32::from(c.cold().resets_received).into(),
    ));
    if let Some(e) = c.cold().error {
        d.observed.push(("error", Value::Int(i64::from(e))));
    }
    d.message = format!(
        "connect() to {} was refused: the peer answered the SYN with a RST (ECONNREFUSED). \
         Nothing listens on that port there, or a firewall rejects it with tcp-reset.",
        peer(c)
    );
    out.push(d);
}

/// `connect()` failed before any SYN: no local port was free for the destination.
pub fn local_port_exhausted(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    if failed_connect(c) == Some(End::Aborted)
        && c.lport == 0
        && c.cold().retransmits.total == 0
        && c.cold().error.is_none()
        && c.state() == Some(TcpState::CLOSE)
    {
        no_local_port(c, inp.sys, out)
    }
}

fn syn_timeout(c: &Conn, sys: &Sysctls, out: &mut Vec<Diagnosis>) {
    let (retries, own) = syn_retries(c, sys);
    let linear = sys.int(sc::SYN_LINEAR_TIMEOUTS).unwrap_or(0).max(0) as u32;
    let ut = user_timeout(c);
    let plan = budget::syn_sent(SynSent {
        syn_retries: retries,
        linear_timeouts: linear,
        rto_max_ms: sys.rto_max_ms(),
        user_timeout_ms: ut,
    });
    let sent = u32::from(c.cold().retransmits.by_state[TcpState::SYN_SENT.0 as usize]);
    let took = c.duration_ns().map(ms);
    let mut d = Diagnosis::new("connect_timeout", Severity::Error, sys);
    d.sysctl = sys.pick(&[sc::SYN_RETRIES, sc::SYN_LINEAR_TIMEOUTS, sc::RTO_MAX_MS]);
    if let Some(n) = own {
        d.overrides.push(("TCP_SYNCNT", n.to_string()));
    }
    add_user_timeout(&mut d, ut);
    d.observed.push(("syn_retransmits", sent.into()));
    if let Some(t) = took {
        d.observed.push(("gave_up_after_ms", t.into()));
    }
    d.expected
        .push(("syn_retransmits", plan.retransmits().into()));
    d.expected
        .push(("retransmit_at_ms", plan.retransmit_at_ms.clone().into()));
    d.expected
        .push(("gave_up_after_ms", plan.give_up_ms.into()));
    // Timers never fire early, and each fires up to one timer-wheel granule late.
    let late = plan.late_max_ms(sys.hz);
    d.expected.push(("timer_late_max_ms", late.into()));
    let agrees = sent == plan.retransmits()
        && took.is_none_or(|t| within_timer_slack(t, plan.give_up_ms, late));
    d.agrees = Some(agrees);
    let governing = match (own, ut) {
        (_, Some(ut)) => format!(
            "TCP_USER_TIMEOUT={ut} ms set on the socket replaces the time budget of {}={retries} ({}); the last timer is cut short to end at it",
            sc::SYN_RETRIES,
            secs(budget::model_timeout_ms(retries, 1000, sys.rto_max_ms()))
        ),
        (Some(n), None) => format!(
            "TCP_SYNCNT={n} set on the socket overrides {}={}; it gives a time budget of {}",
            sc::SYN_RETRIES,
            sys.raw(sc::SYN_RETRIES).unwrap_or("?"),
            secs(plan.budget_ms)
        ),
        (None, None) => format!(
            "{}={retries} gives a time budget of {}",
            sc::SYN_RETRIES,
            secs(plan.budget_ms)
        ),
    };
    let spacing = if linear > 0 {
        format!(
            " and at most {} retransmits (the first {linear} 1 s apart per {}={linear}, then doubling)",
            retries + linear,
            sc::SYN_LINEAR_TIMEOUTS
        )
    } else {
        // Kernels without tcp_syn_linear_timeouts (before 6.5; 6.1): the RTO doubles from 1 s.
        " (the timeout doubles from 1 s)".to_string()
    };
    let schedule = times(&plan.retransmit_at_ms);
    let verdict = match (agrees, took) {
        (true, Some(t)) => format!(
            "measured {}, {} after the prediction: within the {} its timers may add (each fires up to one timer-wheel granule late), so it agrees",
            secs(t),
            secs(t.saturating_sub(plan.give_up_ms)),
            secs(late)
        ),
        (true, None) => "it agrees".to_string(),
        (false, _) => format!(
            "measured {sent} retransmits and {}; this differs (events missed, or a BPF program changed the timeouts)",
            took.map_or("?".into(), secs)
        ),
    };
    d.message = format!(
        "connect() to {} timed out after {} with {sent} unanswered SYN retransmits. {governing}{spacing}: the kernel retransmits at {schedule} and gives up at {} — {verdict}. \
         Something drops the SYNs (firewall, host down, no route back).",
        peer(c),
        took.map_or("?".into(), secs),
        secs(plan.give_up_ms),
    );
    out.push(d);
}

/// Whether `measured_ms` is what a kernel timer schedule predicting `predicted_ms` can give:
/// never earlier (but for the millisecond the stamps are rounded to), at most `late_ms` plus
/// [`PROCESSING_MS`] later.
pub(super) fn within_timer_slack(measured_ms: u64, predicted_ms: u64, late_ms: u64) -> bool {
    measured_ms + 1 >= predicted_ms && measured_ms <= predicted_ms + late_ms + PROCESSING_MS
}

/// What softirq and scheduling delays may add on top of the timers' own lateness.
const PROCESSING_MS: u64 = 50;

/// "1 s and 3 s", "1 s, 3 s, 7 s, 15 s, 31 s and 63 s"; longer lists keep the first five
/// and the last.
fn times(at_ms: &[u64]) -> String {
    let words: Vec<String> = at_ms.iter().map(|&t| secs(t)).collect();
    match words.as_slice() {
        [] => "none".into(),
        [one] => one.clone(),
        [head @ .., last] if head.len() < 6 => format!("{} and {last}", head.join(", ")),
        [..] => format!("{}, … {}", words[..5].join(", "), words[words.len() - 1]),
    }
}

fn no_local_port(c: &Conn, sys: &Sysctls, out: &mut Vec<Diagnosis>) {
    let mut d = Diagnosis::new("local_port_exhausted", Severity::Error, sys);
    d.sysctl = sys.pick(&[sc::LOCAL_PORT_RANGE, sc::TW_REUSE, sc::MAX_TW_BUCKETS]);
    let ports = sys
        .port_range()
        .map(|(lo, hi)| u64::from(hi.saturating_sub(lo)) + 1);
    d.observed.push(("local_port", 0u32.into()));
    d.observed.push(("syn_sent", false.into()));
    if let Some(n) = ports {
        d.expected.push(("ports_per_destination", n.into()));
    }
    d.message = format!(
        "connect() to {} failed before sending a SYN: no free local port (EADDRNOTAVAIL, \"Cannot assign requested address\"). \
         {}={} gives {} ports per destination and all are taken, usually by TIME_WAIT sockets of earlier connections (60 s each). \
         {}",
        peer(c),
        sc::LOCAL_PORT_RANGE,
        sys.raw(sc::LOCAL_PORT_RANGE).unwrap_or("?"),
        ports.map_or("?".into(), |n| n.to_string()),
        tw_reuse_advice(sys)
    );
    out.push(d);
}

/// What `tcp_tw_reuse` does here, in one sentence.
pub(super) fn tw_reuse_advice(sys: &Sysctls) -> String {
    let delay = sys
        .raw(sc::TW_REUSE_DELAY)
        .map(|v| format!(" once it is {v} ms old"))
        .unwrap_or_default();
    let what = match sys.int(sc::TW_REUSE) {
        Some(1) => "(on): connect() may already take over TIME_WAIT ports (needs timestamps)",
        Some(2) => "(loopback only): setting 1 lets connect() take over a TIME_WAIT port",
        _ => "(off): setting 1 lets connect() take over a TIME_WAIT port",
    };
    format!(
        "{}={} {what}{delay} to the same destination; it does not shorten TIME_WAIT nor help accepted (server-side) connections; more ports ({}) or more destination addresses/ports do.",
        sc::TW_REUSE,
        sys.raw(sc::TW_REUSE).unwrap_or("?"),
        sc::LOCAL_PORT_RANGE
    )
}

/// A server-side handshake that never completed: SYN-ACK retransmits until
/// `tcp_synack_retries` is spent.
pub fn half_open(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    if !c.has_note(note::HALF_OPEN) || c.visited(TcpState::ESTABLISHED) {
        return;
    }
    let sys = inp.sys;
    let sent = u32::from(c.cold().retransmits.by_kind[SegmentKind::SynAck as usize]);
    if sent == 0 {
        return;
    }
    let retries = sys.int_or_default(sc::SYNACK_RETRIES).max(0) as u32;
    let plan = budget::synack(retries, sys.rto_max_ms());
    let gone = c.end.is_some() && c.end != Some(End::Open);
    let mut d = Diagnosis::new("half_open", Severity::Warning, sys);
    d.sysctl = sys.pick(&[sc::SYNACK_RETRIES, sc::MAX_SYN_BACKLOG, sc::SYNCOOKIES]);
    d.observed.push(("synack_retransmits", sent.into()));
    let span = match (c.cold().retransmits.first_ns, c.cold().retransmits.last_ns) {
        (Some(a), Some(b)) => Some(ms(b - a)),
        _ => None,
    };
    if let Some(s) = span {
        d.observed.push(("first_to_last_retransmit_ms", s.into()));
    }
    d.observed.push(("request_dropped", gone.into()));
    d.expected
        .push(("synack_retransmits", plan.retransmits().into()));
    d.expected
        .push(("retransmit_at_ms", plan.retransmit_at_ms.clone().into()));
    d.expected
        .push(("dropped_after_ms", plan.give_up_ms.into()));
    let expected_span = match (plan.retransmit_at_ms.first(), plan.retransmit_at_ms.last()) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    // Dropped when the timer after the last retransmit ran out: found gone by a look made
    // from then on, every 0.1 s; each timer may fire a granule late.
    let late = plan.late_max_ms(sys.hz);
    let dropped_after = c.duration_ns().filter(|_| gone).map(ms);
    if let Some(t) = dropped_after {
        d.observed.push(("dropped_after_ms", t.into()));
        d.expected.push(("timer_late_max_ms", late.into()));
    }
    let agrees = sent == plan.retransmits()
        && span.is_none_or(|s| close_enough(s, expected_span, 300, 5))
        && dropped_after.is_none_or(|t| within_timer_slack(t, plan.give_up_ms, late + LOOK_MS));
    d.agrees = Some(agrees && gone);
    d.message = format!(
        "Half-open handshake from {}: the client never acknowledged our SYN-ACK, which was retransmitted {sent} times{}. \
         {}={retries} allows {} retransmits (at {} after the SYN), then the request is dropped after {}{}. \
         The client's ACKs are lost on the way back, or it was a scan/SYN flood.",
        peer(c),
        match dropped_after {
            Some(t) => format!("; the request socket was gone {} after the SYN", secs(t)),
            None => String::new(),
        },
        sc::SYNACK_RETRIES,
        plan.retransmits(),
        plan.retransmit_at_ms
            .iter()
            .map(|t| secs(*t))
            .collect::<Vec<_>>()
            .join(", "),
        secs(plan.give_up_ms),
        if agrees {
            format!(" — it agrees (its timers may add up to {})", secs(late))
        } else {
            " — this differs".to_string()
        },
    );
    out.push(d);
}

/// How long after a request socket's expected drop the look that finds it gone may come.
const LOOK_MS: u64 = 150;

/// Retransmits counted in states where live data retransmission rules apply.
fn data_retransmits(c: &Conn) -> u32 {
    [TcpState::ESTABLISHED, TcpState::CLOSE_WAIT]
        .iter()
        .map(|s| u32::from(c.cold().retransmits.by_state[s.0 as usize]))
        .sum()
}

/// An established connection that gave up retransmitting data (`tcp_retries2`).
pub fn data_timeout(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    let sys = inp.sys;
    let before = state_before_close(c);
    let live_state = matches!(before, Some(TcpState::ESTABLISHED | TcpState::CLOSE_WAIT))
        || (matches!(
            before,
            Some(TcpState::FIN_WAIT1 | TcpState::CLOSING | TcpState::LAST_ACK)
        ) && orphan(c) == Some(false));
    if c.end != Some(End::Timeout) || !live_state || c.cold().retransmits.total == 0 {
        return;
    }
    let (Some(first), Some(end)) = (c.cold().retransmits.first_ns, c.end_ns) else {
        return;
    };
    let retries2 = sys.int_or_default(sc::RETRIES2).max(0) as u32;
    let retries1 = sys.int_or_default(sc::RETRIES1).max(0) as u32;
    let ut = user_timeout(c);
    let rto0 = first_rto_ms(c, sys);
    let plan = budget::data(DataRto {
        boundary: retries2,
        first_rto_ms: rto0,
        rto_max_ms: sys.rto_max_ms(),
        user_timeout_ms: ut,
    });
    let sent = c.cold().retransmits.total;
    // The loss began one RTO before the first retransmit.
    let elapsed = ms(end.saturating_sub(first)) + rto0;
    if let Some(ut) = ut {
        return user_timeout_expired(c, inp, ut, &plan, end, out);
    }
    let mut d = Diagnosis::new("data_timeout", Severity::Error, sys);
    d.sysctl = sys.pick(&[sc::RETRIES2, sc::RETRIES1, sc::RTO_MIN_US, sc::RTO_MAX_MS]);
    add_user_timeout(&mut d, ut);
    d.observed.push(("retransmits", sent.into()));
    d.observed.push(("gave_up_after_ms", elapsed.into()));
    d.expected.push(("retransmits", plan.retransmits().into()));
    d.expected.push(("budget_ms", plan.budget_ms.into()));
    d.expected
        .push(("gave_up_after_ms", plan.give_up_ms.into()));
    let agrees = super::matches_schedule(sent, elapsed, &plan, rto0);
    d.agrees = Some(agrees);
    let route = budget::model_timeout_ms(retries1, budget::RTO_MIN_MS, sys.rto_max_ms());
    let governing = format!(
        "{}={retries2} gives a budget of {} counted from the first retransmission (RTO doubling from {} ms up to {})",
        sc::RETRIES2,
        secs(plan.budget_ms),
        rto0,
        secs(sys.rto_max_ms())
    );
    d.message = format!(
        "The peer {} stopped acknowledging: {sent} retransmits over {}, then the kernel gave up (ETIMEDOUT). {governing}; \
         the kernel expects {} retransmits and {}{}. After {} ({}={retries1}) it already suspected the route.",
        peer(c),
        secs(elapsed),
        plan.retransmits(),
        secs(plan.give_up_ms),
        if agrees {
            " — it agrees"
        } else {
            " — this differs"
        },
        secs(route),
        sc::RETRIES1,
    );
    out.push(d);
}

/// A data timeout under `TCP_USER_TIMEOUT`: the kernel gives up exactly the user timeout after
/// its first RTO retransmission (`retrans_stamp`; a tail loss probe before it does not count,
/// measured on 6.18), its last timer cut short to end there.
fn user_timeout_expired(
    c: &Conn,
    inp: &Inputs,
    ut: u64,
    plan: &budget::Schedule,
    end: u64,
    out: &mut Vec<Diagnosis>,
) {
    let sys = inp.sys;
    let r = &c.cold().retransmits;
    let n = plan.retransmits();
    // One more than the schedule: the first was a tail loss probe.
    let tlp = r.total == n + 1;
    let Some(stamp) = (if tlp { r.second_ns } else { r.first_ns }) else {
        return;
    };
    let measured = ms(end.saturating_sub(stamp));
    // Only the last, shortened timer can make the end late.
    let last_timer = plan.give_up_ms - plan.retransmit_at_ms.last().copied().unwrap_or(0);
    let late = budget::timer_late_max_ms(last_timer, sys.hz);
    let agrees = (r.total == n || tlp) && within_timer_slack(measured, ut, late);
    let mut d = Diagnosis::new("data_timeout", Severity::Error, sys);
    d.sysctl = sys.pick(&[sc::RETRIES2, sc::RTO_MIN_US, sc::RTO_MAX_MS]);
    add_user_timeout(&mut d, Some(ut));
    d.observed.push(("retransmits", r.total.into()));
    d.observed
        .push(("gave_up_after_first_rto_ms", measured.into()));
    d.expected.push(("retransmits", n.into()));
    d.expected
        .push(("retransmit_at_ms", plan.retransmit_at_ms.clone().into()));
    d.expected.push(("gave_up_after_first_rto_ms", ut.into()));
    d.expected.push(("last_timer_ms", last_timer.into()));
    d.expected.push(("timer_late_max_ms", late.into()));
    d.agrees = Some(agrees);
    d.message = format!(
        "The peer {} stopped acknowledging: {} retransmits{}, then the kernel gave up (ETIMEDOUT) {} after the first RTO retransmission. \
         TCP_USER_TIMEOUT={ut} ms set on the socket replaces {}={}: the kernel gives up {} after the first RTO retransmission, \
         its RTO doubling ({} retransmits) and the last timer cut to {} so that it ends exactly then{}.",
        peer(c),
        r.total,
        if tlp {
            " (the first a tail loss probe)"
        } else {
            ""
        },
        secs(measured),
        sc::RETRIES2,
        sys.raw(sc::RETRIES2).unwrap_or("?"),
        secs(ut),
        n,
        secs(last_timer),
        if agrees {
            format!(
                " — it agrees (the last timer may fire up to {} late)",
                secs(late)
            )
        } else {
            " — this differs (events missed, or the option changed)".to_string()
        },
    );
    out.push(d);
}

/// Keepalive gave up: `time + probes × intvl` of silence, per-socket options first.
pub fn keepalive(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    let sys = inp.sys;
    let keepopen = c.cold().sock.and_then(|s| s.get(Field::KeepOpen)) == Some(1);
    let by_reason = inp.reset_reason == Some("TCP_KEEPALIVE_TIMEOUT");
    if c.end != Some(End::Timeout) || !(by_reason || keepopen && data_retransmits(c) == 0) {
        return;
    }
    let Some(established) = c
        .visits
        .iter()
        .find(|v| v.state == TcpState::ESTABLISHED)
        .and_then(|v| v.since_ns)
    else {
        return;
    };
    let idle_ms = c.end_ns.map_or(0, |e| ms(e.saturating_sub(established)));
    let time_own = jiffies_override(c, sys, Field::KeepaliveTimeJiffies);
    let intvl_own = jiffies_override(c, sys, Field::KeepaliveIntvlJiffies);
    let probes_own = sock_value(c, Field::KeepaliveProbes);
    let ut = user_timeout(c);
    let time = time_own.unwrap_or(sys.int_or_default(sc::KEEPALIVE_TIME).max(0) as u64 * 1000);
    let intvl = intvl_own.unwrap_or(sys.int_or_default(sc::KEEPALIVE_INTVL).max(0) as u64 * 1000);
    let probes =
        probes_own.unwrap_or(sys.int_or_default(sc::KEEPALIVE_PROBES).max(0) as u64) as u32;
    let expected = budget::keepalive_ms(time, intvl, probes, ut);
    let mut d = Diagnosis::new("keepalive_timeout", Severity::Error, sys);
    d.sysctl = sys.pick(&[
        sc::KEEPALIVE_TIME,
        sc::KEEPALIVE_INTVL,
        sc::KEEPALIVE_PROBES,
    ]);
    let mut replaced = Vec::new();
    for (opt, own, knob) in [
        ("TCP_KEEPIDLE", time_own, sc::KEEPALIVE_TIME),
        ("TCP_KEEPINTVL", intvl_own, sc::KEEPALIVE_INTVL),
    ] {
        if let Some(v) = own {
            d.overrides.push((opt, secs(v)));
            replaced.push(format!(
                "{opt}={} overrides {knob}={}",
                secs(v),
                sys.raw(knob).unwrap_or("?")
            ));
        }
    }
    if let Some(p) = probes_own {
        d.overrides.push(("TCP_KEEPCNT", p.to_string()));
        replaced.push(format!(
            "TCP_KEEPCNT={p} overrides {}={}",
            sc::KEEPALIVE_PROBES,
            sys.raw(sc::KEEPALIVE_PROBES).unwrap_or("?")
        ));
    }
    add_user_timeout(&mut d, ut);
    d.observed.push(("idle_ms", idle_ms.into()));
    d.expected.push(("idle_ms", expected.into()));
    d.expected.push(("probes", probes.into()));
    let agrees = close_enough(idle_ms, expected, 500, 5);
    d.agrees = Some(agrees);
    let overrides = if replaced.is_empty() {
        String::new()
    } else {
        format!(
            " The application set its own values: {}.",
            replaced.join(", ")
        )
    };
    let rule = match ut {
        Some(ut) => format!(
            "TCP_USER_TIMEOUT={ut} ms set on the socket replaces the probe count: the kernel resets at the first keepalive tick ({} idle, then every {}) at least {ut} ms after the peer was last heard, once a probe went unanswered: {}",
            secs(time),
            secs(intvl),
            secs(expected)
        ),
        None => format!(
            "The kernel allows {} idle + {probes} probes × {} = {}",
            secs(time),
            secs(intvl),
            secs(expected)
        ),
    };
    d.message = format!(
        "Keepalive killed the connection to {} after {} of silence: its probes went unanswered, then RST and ETIMEDOUT. \
         {rule}{}.{overrides} The peer is gone, or something drops its packets.",
        peer(c),
        secs(idle_ms),
        if agrees {
            " — it agrees"
        } else {
            " — this differs"
        },
    );
    out.push(d);
}
