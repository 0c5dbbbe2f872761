//! The kernel's give-up arithmetic (Linux 6.x `net/ipv4/tcp_timer.c`, `inet_connection_sock.c`)
//! as small pure functions: given the governing values, when does the kernel retransmit, and
//! when does it give up.
//!
//! Every give-up is a time budget, not a count: `retransmits_timed_out()` compares the time
//! since the first unacknowledged transmission with `tcp_model_timeout(boundary)`, the time
//! `boundary` doubling retransmissions would take from a base RTO. The count a connection ends
//! with therefore depends on its actual RTOs and can differ from the sysctl.

/// `TCP_RTO_MIN`: the base of the data and orphan budgets (HZ/5).
pub const RTO_MIN_MS: u64 = 200;
/// `TCP_TIMEOUT_INIT`: the first SYN / SYN-ACK retransmission timeout.
pub const TIMEOUT_INIT_MS: u64 = 1000;
/// `TCP_TIMEWAIT_LEN`: TIME_WAIT lasts this long, fixed at compile time.
pub const TIME_WAIT_MS: u64 = 60_000;
/// `TCP_RTO_MAX` before `tcp_rto_max_ms` existed.
pub const RTO_MAX_MS: u64 = 120_000;
/// The retry count `tcp_orphan_retries=0` stands for while the peer seems alive.
pub const ORPHAN_RETRIES_ALIVE: u32 = 8;

/// What the kernel will do: retransmit at these times, give up at `give_up_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Milliseconds from the first transmission to each retransmission.
    pub retransmit_at_ms: Vec<u64>,
    /// Milliseconds from the first transmission to the give-up.
    pub give_up_ms: u64,
    /// The time budget `retransmits_timed_out()` compares with.
    pub budget_ms: u64,
}

impl Schedule {
    pub fn retransmits(&self) -> u32 {
        self.retransmit_at_ms.len() as u32
    }
}

/// `tcp_model_timeout()`: time `boundary` retransmissions take from `rto_base_ms`, doubling up
/// to `rto_max_ms` and linear after that.
pub fn model_timeout_ms(boundary: u32, rto_base_ms: u64, rto_max_ms: u64) -> u64 {
    let base = rto_base_ms.max(1);
    let thresh = (rto_max_ms / base).max(1).ilog2();
    if boundary <= thresh {
        ((2u64 << boundary) - 1) * base
    } else {
        ((2u64 << thresh) - 1) * base + u64::from(boundary - thresh) * rto_max_ms
    }
}

/// Runs the retransmission timer: it fires after `rto`; `expired(n, t)` decides whether the
/// socket gives up with `n` retransmits done at `t`; otherwise it retransmits and `next_rto`
/// gives the following timeout. Bounded to 64 rounds.
fn run_timer(
    first_rto_ms: u64,
    budget_ms: u64,
    mut expired: impl FnMut(u32, u64) -> bool,
    mut next_rto: impl FnMut(u32, u64) -> u64,
) -> Schedule {
    let mut t = 0;
    let mut rto = first_rto_ms.max(1);
    let mut at = Vec::new();
    for _ in 0..64 {
        t += rto;
        let n = at.len() as u32;
        if expired(n, t) {
            break;
        }
        at.push(t);
        rto = next_rto(n + 1, rto);
    }
    Schedule {
        retransmit_at_ms: at,
        give_up_ms: t,
        budget_ms,
    }
}

/// The governing values of an active open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynSent {
    /// `TCP_SYNCNT` if the socket set one, else `tcp_syn_retries`.
    pub syn_retries: u32,
    /// `tcp_syn_linear_timeouts` (0 on kernels without it).
    pub linear_timeouts: u32,
    pub rto_max_ms: u64,
    /// `TCP_USER_TIMEOUT`, when set (it replaces the modelled budget).
    pub user_timeout_ms: Option<u64>,
}

/// SYN_SENT: gives up when `retransmits >= syn_retries + linear_timeouts` or when the time since
/// the SYN passes the budget of `syn_retries` from a 1 s base; the first `linear_timeouts`
/// retransmits keep the 1 s RTO, later ones double it.
pub fn syn_sent(p: SynSent) -> Schedule {
    let budget = p
        .user_timeout_ms
        .unwrap_or_else(|| model_timeout_ms(p.syn_retries, TIMEOUT_INIT_MS, p.rto_max_ms));
    let max_retransmits = p.syn_retries + p.linear_timeouts;
    run_timer(
        TIMEOUT_INIT_MS,
        budget,
        |n, t| n >= max_retransmits || (n > 0 && t >= budget),
        |done, rto| {
            if done > p.linear_timeouts {
                (rto * 2).min(p.rto_max_ms)
            } else {
                rto
            }
        },
    )
}

/// A half-open handshake's request socket: SYN-ACK retransmitted at 1, 2, 4 … s intervals
/// (`reqsk_timeout`), dropped once `synack_retries` were sent and the next timer fires.
pub fn synack(synack_retries: u32, rto_max_ms: u64) -> Schedule {
    let r = synack_retries;
    let mut s = run_timer(
        TIMEOUT_INIT_MS,
        0,
        |n, _| n >= r,
        |done, _| (TIMEOUT_INIT_MS << done.min(30)).min(rto_max_ms),
    );
    s.budget_ms = s.give_up_ms;
    s
}

/// The governing values of a data (or FIN) retransmission timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRto {
    /// `tcp_retries2`, or the orphan retry count for a closed socket.
    pub boundary: u32,
    /// The connection's RTO when the loss began.
    pub first_rto_ms: u64,
    pub rto_max_ms: u64,
    pub user_timeout_ms: Option<u64>,
}

/// Established data or an orphan's FIN: doubling RTOs from the connection's RTO. The budget
/// modelled from `TCP_RTO_MIN` counts from the first RTO retransmission (`retrans_stamp` takes
/// that skb's fresh timestamp; measured on 6.18), so the kernel gives up at the first timer
/// at least `budget` after it. A tail loss probe may add one retransmit before the first RTO.
pub fn data(p: DataRto) -> Schedule {
    let budget = p
        .user_timeout_ms
        .unwrap_or_else(|| model_timeout_ms(p.boundary, RTO_MIN_MS, p.rto_max_ms));
    let first = p.first_rto_ms.max(1);
    let mut s = run_timer(
        first,
        budget,
        |n, t| n > 0 && t - first >= budget,
        |_, rto| (rto * 2).min(p.rto_max_ms),
    );
    s.budget_ms = budget;
    s
}

/// `tcp_orphan_retries()`: the retry count of a closed socket (0 means 8 while alive).
pub fn orphan_retries(sysctl: u32, alive: bool) -> u32 {
    if sysctl == 0 && alive {
        ORPHAN_RETRIES_ALIVE
    } else {
        sysctl
    }
}

/// Keepalive: idle `time`, then `probes` probes `intvl` apart; the connection is reset when
/// the last one goes unanswered for one more interval: `time + probes × intvl`. With
/// `TCP_USER_TIMEOUT` it is reset at the first probe tick past that timeout instead.
pub fn keepalive_ms(time_ms: u64, intvl_ms: u64, probes: u32, user_timeout_ms: Option<u64>) -> u64 {
    match user_timeout_ms {
        Some(ut) => {
            let mut t = time_ms + intvl_ms.max(1);
            while t < ut {
                t += intvl_ms.max(1);
            }
            t
        }
        None => time_ms + u64::from(probes) * intvl_ms,
    }
}

/// `tcp_fin_time()`: how long an orphaned FIN_WAIT2 is kept (at least 3.5 RTO).
pub fn fin_wait2_ms(fin_timeout_ms: u64, rto_ms: u64) -> u64 {
    fin_timeout_ms.max((rto_ms << 2) - (rto_ms >> 1))
}

/// Human seconds for messages: "7 s", "1.4 s", "102.2 s", "15 min".
pub fn secs(ms: u64) -> String {
    if ms >= 600_000 && ms.is_multiple_of(60_000) {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(retries: u32, linear: u32) -> Schedule {
        syn_sent(SynSent {
            syn_retries: retries,
            linear_timeouts: linear,
            rto_max_ms: RTO_MAX_MS,
            user_timeout_ms: None,
        })
    }

    #[test]
    fn syn_sent_classic_is_127_s_at_6() {
        // 5.15 (no linear timeouts): 1, 3, 7, ... 63 s, give up at 127 s.
        let s = syn(6, 0);
        assert_eq!(s.retransmit_at_ms, [1000, 3000, 7000, 15000, 31000, 63000]);
        assert_eq!(s.give_up_ms, 127_000);
    }

    #[test]
    fn syn_sent_with_linear_timeouts_as_measured_on_6_18() {
        // Measured: syn_retries=2 → 5 retransmits 1 s apart, ETIMEDOUT at ≈7.1 s.
        let s = syn(2, 4);
        assert_eq!(s.retransmit_at_ms, [1000, 2000, 3000, 4000, 5000]);
        assert_eq!((s.give_up_ms, s.budget_ms), (7000, 7000));
        // syn_retries=1 → 2 retransmits, ≈3.1 s.
        let s = syn(1, 4);
        assert_eq!(s.retransmit_at_ms, [1000, 2000]);
        assert_eq!(s.give_up_ms, 3000);
        // The default 6 with linear timeouts: the count cap (10) ends it at 131 s, not 127.
        let s = syn(6, 4);
        assert_eq!(s.retransmits(), 10);
        assert_eq!(s.give_up_ms, 131_000);
    }

    #[test]
    fn synack_doubles_from_one_second() {
        let s = synack(5, RTO_MAX_MS);
        assert_eq!(s.retransmit_at_ms, [1000, 3000, 7000, 15000, 31000]);
        assert_eq!(s.give_up_ms, 63_000);
        assert_eq!(synack(2, RTO_MAX_MS).give_up_ms, 7000);
    }

    #[test]
    fn data_budget_is_924_6_s_at_15() {
        assert_eq!(model_timeout_ms(15, RTO_MIN_MS, RTO_MAX_MS), 924_600);
        let s = data(DataRto {
            boundary: 3,
            first_rto_ms: 200,
            rto_max_ms: RTO_MAX_MS,
            user_timeout_ms: None,
        });
        // Counted from the first retransmit at 200 ms: 3000 - 200 < 3000, one more.
        assert_eq!(s.retransmit_at_ms, [200, 600, 1400, 3000]);
        assert_eq!(s.give_up_ms, 6200);
        // As measured on 6.18 with tcp_orphan_retries=2 (RTO ≈ 208 ms): RTO retransmits at
        // +413, +829, +1661 ms after the FIN (plus a tail loss probe at +205), gone at +3325.
        let s = data(DataRto {
            boundary: 2,
            first_rto_ms: 208,
            rto_max_ms: RTO_MAX_MS,
            user_timeout_ms: None,
        });
        assert_eq!(s.retransmit_at_ms, [208, 624, 1456]);
        assert_eq!(s.give_up_ms, 3120);
    }

    #[test]
    fn orphan_zero_means_eight_and_about_102_s() {
        assert_eq!(orphan_retries(0, true), 8);
        assert_eq!(orphan_retries(0, false), 0);
        assert_eq!(orphan_retries(3, true), 3);
        let s = data(DataRto {
            boundary: orphan_retries(0, true),
            first_rto_ms: 200,
            rto_max_ms: RTO_MAX_MS,
            user_timeout_ms: None,
        });
        // The 102.2 s budget counts from the first retransmit: 9 retransmits, ≈204.6 s.
        assert_eq!(s.budget_ms, 102_200);
        assert_eq!(s.retransmits(), 9);
        assert_eq!(s.give_up_ms, 204_600);
    }

    #[test]
    fn keepalive_and_fin_wait2() {
        assert_eq!(keepalive_ms(7_200_000, 75_000, 9, None), 7_875_000);
        assert_eq!(keepalive_ms(15_000, 15_000, 9, Some(40_000)), 45_000);
        assert_eq!(fin_wait2_ms(60_000, 200), 60_000);
        assert_eq!(fin_wait2_ms(0, 200), 700);
        assert_eq!(secs(7000), "7 s");
        assert_eq!(secs(102_200), "102.2 s");
        assert_eq!(secs(924_600), "924.6 s");
    }
}
