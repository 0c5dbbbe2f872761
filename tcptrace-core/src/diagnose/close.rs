//! Rules for the closing side: FIN retries of an orphaned socket (FIN_WAIT1, CLOSING,
//! LAST_ACK), the orphaned FIN_WAIT2 timeout, TIME_WAIT, and resets with their kernel reason.
use super::{
    Diagnosis, Inputs, Severity, first_rto_ms, jiffies_override, matches_schedule,
    open::tw_reuse_advice, orphan, peer,
};
use crate::{
    budget::{self, DataRto, secs},
    lifecycle::{Conn, End, end::state_before_close},
    snapshot::Field,
    sysctl as sc,
    tcp::TcpState,
};

/// The closed socket retransmitted its FIN until `tcp_orphan_retries` (0 → 8) ran out.
pub fn orphan_fin(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    let sys = inp.sys;
    let Some(state) = state_before_close(c) else {
        return;
    };
    // LAST_ACK ends "closed" whether the ACK came or the kernel gave up: timing tells.
    let fin_state = matches!(
        state,
        TcpState::FIN_WAIT1 | TcpState::CLOSING | TcpState::LAST_ACK
    );
    if !fin_state
        || (c.end == Some(End::Closed) && state != TcpState::LAST_ACK)
        || c.end == Some(End::Open)
        || c.end.is_none()
        || orphan(c) == Some(false)
    {
        return;
    }
    let sent = u32::from(c.cold().retransmits.by_state[state.0 as usize]);
    if sent == 0 {
        return;
    }
    let sysctl = sys.int_or_default(sc::ORPHAN_RETRIES).max(0) as u32;
    let retries = budget::orphan_retries(sysctl, true);
    let rto0 = first_rto_ms(c, sys);
    let plan = budget::data(DataRto {
        boundary: retries,
        first_rto_ms: rto0,
        rto_max_ms: sys.rto_max_ms(),
        user_timeout_ms: None,
    });
    let in_state = c
        .spans()
        .filter(|(s, _)| *s == state)
        .filter_map(|(_, ns)| ns)
        .sum::<u64>()
        / 1_000_000;
    let mut d = Diagnosis::new("orphan_fin_timeout", Severity::Warning, sys);
    d.sysctl = sys.pick(&[sc::ORPHAN_RETRIES, sc::RTO_MAX_MS]);
    d.observed.push(("state", state.name().into()));
    d.observed.push(("fin_retransmits", sent.into()));
    d.observed.push(("time_in_state_ms", in_state.into()));
    d.expected.push(("retries", retries.into()));
    d.expected
        .push(("fin_retransmits", plan.retransmits().into()));
    d.expected
        .push(("gave_up_after_ms", plan.give_up_ms.into()));
    d.expected.push(("budget_ms", plan.budget_ms.into()));
    let agrees = matches_schedule(sent, in_state, &plan, rto0);
    d.agrees = Some(agrees);
    let zero_rule = if sysctl == 0 {
        format!(
            "{}=0, which the kernel reads as {} while the peer seems alive",
            sc::ORPHAN_RETRIES,
            budget::ORPHAN_RETRIES_ALIVE
        )
    } else {
        let eight = budget::data(DataRto {
            boundary: budget::ORPHAN_RETRIES_ALIVE,
            first_rto_ms: rto0,
            rto_max_ms: sys.rto_max_ms(),
            user_timeout_ms: None,
        });
        format!(
            "{}={sysctl} (0, the default, would mean {}: gone after ≈{})",
            sc::ORPHAN_RETRIES,
            budget::ORPHAN_RETRIES_ALIVE,
            secs(eight.give_up_ms)
        )
    };
    let who = if state == TcpState::LAST_ACK {
        "our FIN (answering the peer's) was never acknowledged"
    } else {
        "our FIN was never acknowledged"
    };
    d.message = format!(
        "Closed by the application, stuck in {}: {who} by {}; it was retransmitted {sent} times over {}, then the socket was gone. \
         An orphan's FIN retries are governed by {zero_rule}: a budget of {} counted from the first retransmission, so {} retransmits (plus a possible tail loss probe) and the end after {}{}. Something drops FINs/ACKs between the hosts, or the peer is gone.",
        state.name(),
        peer(c),
        secs(in_state),
        secs(plan.budget_ms),
        plan.retransmits(),
        secs(plan.give_up_ms),
        if agrees {
            " — it agrees: the kernel gave up"
        } else {
            " — this differs (a late ACK, or events missed)"
        },
    );
    out.push(d);
}

/// An orphaned FIN_WAIT2 kept by a timewait socket for `tcp_fin_timeout` (or `TCP_LINGER2`)
/// that then disappeared without the peer's FIN: judged only once a later look found the
/// timewait socket gone (a hand-off in FIN_WAIT2 is normal: the peer's FIN usually follows
/// within milliseconds and turns it into TIME_WAIT).
pub fn fin_wait2(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    let sys = inp.sys;
    let (Some((TcpState::FIN_WAIT2, timer)), Some(watch)) =
        (c.cold().time_wait, c.cold().fin_wait2)
    else {
        return;
    };
    let (Some(gone_ns), Some(handoff_ns)) = (watch.gone_ns, c.end_ns) else {
        return;
    };
    let own = jiffies_override(c, sys, Field::Linger2Jiffies).filter(|_| {
        c.cold()
            .sock
            .and_then(|s| s.get_signed(Field::Linger2Jiffies))
            > Some(0)
    });
    let fin_timeout = own.unwrap_or(sys.int_or_default(sc::FIN_TIMEOUT).max(0) as u64 * 1000);
    let rto = first_rto_ms(c, sys);
    let expected = budget::fin_wait2_ms(fin_timeout, rto).min(budget::TIME_WAIT_MS);
    let ms = |ns: u64| ns.saturating_sub(handoff_ns) / 1_000_000;
    // When the timer ran out, as the first look's countdown says; timers never fire early
    // but up to one granule of their timer-wheel level (plus a jiffy) late.
    let expiry = watch.expires_ns().map(ms);
    let late = budget::timer_late_max_ms(timer.map_or(expected, u64::from), sys.hz);
    let (last_seen, gone) = (ms(watch.last_seen_ns), ms(gone_ns));
    if expiry.is_some_and(|e| gone + LOOK_MARGIN_MS < e) {
        // Gone before its timer ran out: a reset or a reused port ended it, not the timeout.
        return;
    }
    let mut d = Diagnosis::new("fin_wait2_timeout", Severity::Warning, sys);
    d.sysctl = sys.pick(&[sc::FIN_TIMEOUT]);
    if let Some(v) = own {
        d.overrides.push(("TCP_LINGER2", secs(v)));
    }
    if let Some(t) = timer {
        d.observed.push(("timer_ms", u64::from(t).into()));
    }
    d.observed.push(("last_seen_ms", last_seen.into()));
    d.observed.push(("gone_by_ms", gone.into()));
    d.expected.push(("held_ms", expected.into()));
    d.expected.push(("timer_late_max_ms", late.into()));
    // The countdown at the first look fits the budget, and the socket went between the last
    // look that saw it and the first that did not, no earlier than its expiry and no later
    // than the timer wheel allows.
    let agrees = timer.zip(expiry).map(|(t, e)| {
        u64::from(t) <= expected
            && u64::from(t) + 3000 >= expected
            && last_seen <= e + late + LOOK_MARGIN_MS
    });
    d.agrees = agrees;
    let governing = match own {
        Some(v) => format!(
            "TCP_LINGER2={} set on the socket (it overrides {}={})",
            secs(v),
            sc::FIN_TIMEOUT,
            sys.raw(sc::FIN_TIMEOUT).unwrap_or("?")
        ),
        None => format!("{}={}", sc::FIN_TIMEOUT, secs(fin_timeout).replace(' ', "")),
    };
    d.message = format!(
        "After close(), {} acknowledged our FIN but never sent its own: a timewait socket kept the connection in FIN_WAIT2{}, \
         still there {} after the hand-off and gone by {}, without TIME_WAIT. {governing} allows {}{}. \
         The peer application has not closed its side (it sits in CLOSE_WAIT there), or its FIN is lost.",
        peer(c),
        timer.map_or(String::new(), |t| format!(
            " ({} on its timer at the first look)",
            secs(u64::from(t))
        )),
        secs(last_seen),
        secs(gone),
        secs(expected),
        match agrees {
            Some(true) => format!(
                " — it agrees: the timer ran out (a timer fires up to {} late)",
                secs(late)
            ),
            Some(false) => " — this differs (a late or early end, or events missed)".to_string(),
            None => String::new(),
        }
    );
    out.push(d);
}

/// How far apart two looks at a watched timewait socket may be around its expiry.
const LOOK_MARGIN_MS: u64 = 150;

/// TIME_WAIT: 60 s, fixed; what `tcp_tw_reuse` and `tcp_max_tw_buckets` change.
pub fn time_wait(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    let sys = inp.sys;
    let Some((TcpState::TIME_WAIT, timer)) = c.cold().time_wait else {
        return;
    };
    let mut d = Diagnosis::new("time_wait", Severity::Info, sys);
    d.sysctl = sys.pick(&[sc::TW_REUSE, sc::MAX_TW_BUCKETS, sc::FIN_TIMEOUT]);
    if let Some(t) = timer {
        d.observed.push(("timer_ms", u64::from(t).into()));
    }
    d.expected.push(("held_ms", budget::TIME_WAIT_MS.into()));
    d.agrees = timer.map(|t| {
        u64::from(t) <= budget::TIME_WAIT_MS && u64::from(t) + 5000 >= budget::TIME_WAIT_MS
    });
    d.message = format!(
        "This side closed first, so it holds the port in TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN, fixed in the kernel; {} does not change it){}. {}",
        sc::FIN_TIMEOUT,
        timer.map_or(String::new(), |t| format!(
            ", {} left when looked up",
            secs(u64::from(t))
        )),
        tw_reuse_advice(sys)
    );
    out.push(d);
}

/// A reset, explained by the kernel's reason for it.
pub fn reset(c: &Conn, inp: &Inputs, out: &mut Vec<Diagnosis>) {
    let sent = match c.end {
        Some(End::ResetSent) => true,
        Some(End::ResetReceived) => false,
        _ => return,
    };
    let reason = inp.reset_reason;
    if reason == Some("TCP_KEEPALIVE_TIMEOUT") {
        return; // the keepalive rule explains it
    }
    let mut d = Diagnosis::new("reset", Severity::Warning, inp.sys);
    d.observed
        .push(("direction", if sent { "sent" } else { "received" }.into()));
    if let Some(r) = reason {
        d.observed.push(("reason", r.into()));
    }
    let why = match (sent, reason) {
        (true, Some("TCP_ABORT_ON_CLOSE")) => {
            "the application closed the socket with unread data or with SO_LINGER 0, so the kernel aborted with RST instead of FIN"
        }
        (true, Some("TCP_STATE")) => {
            "the application disconnected abortively (close() with SO_LINGER 0, or connect(AF_UNSPEC)): the kernel sent RST instead of FIN"
        }
        (true, Some("TCP_ABORT_ON_DATA")) => {
            "data arrived after the application closed the socket, so the kernel answered with RST"
        }
        (true, Some("TCP_ABORT_ON_LINGER")) => {
            "TCP_LINGER2 is negative: an orphaned FIN_WAIT2 is reset at once"
        }
        (true, Some("TCP_ABORT_ON_MEMORY")) => {
            "the kernel killed an orphan under memory pressure or tcp_max_orphans"
        }
        (true, Some("NO_SOCKET")) => "a segment arrived for a socket that no longer exists",
        (true, _) => "this side aborted the connection",
        (false, _) => {
            "the peer aborted the connection (ECONNRESET): its application closed with SO_LINGER 0 or unread data, crashed, or a middlebox cut it"
        }
    };
    d.message = format!(
        "Reset {} {}: {why}.",
        if sent { "sent to" } else { "received from" },
        peer(c)
    );
    out.push(d);
}
