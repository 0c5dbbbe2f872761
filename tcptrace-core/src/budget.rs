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

    /// How late, at most, the kernel's timers can make the give-up: every timeout of the
    /// schedule fires up to [`timer_late_max_ms`] late, and each is armed when the previous
    /// one fired, so the lateness adds up.
    pub fn late_max_ms(&self, hz: Option<u32>) -> u64 {
        let mut prev = 0;
        let mut late = 0;
        for t in self.retransmit_at_ms.iter().chain([&self.give_up_ms]) {
            late += timer_late_max_ms(t.saturating_sub(prev), hz);
            prev = *t;
        }
        late
    }
}

/// HZ assumed when the kernel's is unknown: 100, the coarsest jiffy, so the widest slack.
const HZ_UNKNOWN: u32 = 100;

/// The most a kernel timer of `timeout_ms` fires late. The timer wheel
/// (`kernel/time/timer.c`) keeps a timer `d` jiffies away in level `n`, whose buckets are
/// `8^n` jiffies wide (level `n` holds delays from `63·8^(n-1)` jiffies on), and rounds its
/// expiry up to the next bucket boundary so that it never fires early: up to one bucket late,
/// plus the jiffy `msecs_to_jiffies` rounds up. At HZ=250 a 1 s timer (250 jiffies, level 1)
/// fires up to 36 ms late (measured: SYN retransmits 1.024 s apart); a 60 s timer (level 3)
/// up to 2.05 s.
pub fn timer_late_max_ms(timeout_ms: u64, hz: Option<u32>) -> u64 {
    let hz = u64::from(hz.unwrap_or(HZ_UNKNOWN).max(1));
    let jiffies = (timeout_ms * hz).div_ceil(1000);
    let (mut level, mut start) = (0u32, 63u64);
    while level < 8 && jiffies >= start {
        level += 1;
        start <<= 3;
    }
    let granule = 1u64 << (3 * level);
    ((granule + 1) * 1000).div_ceil(hz)
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
/// retransmits keep the 1 s RTO, later ones double it. With `TCP_USER_TIMEOUT` the time budget
/// is the user timeout instead (the retransmit cap stays), and each timer is cut short so it
/// fires when that timeout runs out (`tcp_clamp_rto_to_user_timeout`).
pub fn syn_sent(p: SynSent) -> Schedule {
    let budget = p
        .user_timeout_ms
        .unwrap_or_else(|| model_timeout_ms(p.syn_retries, TIMEOUT_INIT_MS, p.rto_max_ms));
    let max_retransmits = p.syn_retries + p.linear_timeouts;
    let mut t = 0;
    let mut rto = TIMEOUT_INIT_MS;
    let mut at = Vec::new();
    for _ in 0..64 {
        t += clamp_to_user_timeout(rto, t, p.user_timeout_ms);
        let n = at.len() as u32;
        if n >= max_retransmits || (n > 0 && t >= budget) {
            break;
        }
        at.push(t);
        if n + 1 > p.linear_timeouts {
            rto = (rto * 2).min(p.rto_max_ms);
        }
    }
    Schedule {
        retransmit_at_ms: at,
        give_up_ms: t,
        budget_ms: budget,
    }
}

/// `tcp_clamp_rto_to_user_timeout()`: the next timer is the RTO, or what is left of the user
/// timeout counted from `retrans_stamp` (here `elapsed_ms` since it), whichever is shorter; a
/// timeout already passed fires at once (after one jiffy, 1 ms here).
fn clamp_to_user_timeout(rto_ms: u64, elapsed_ms: u64, user_timeout_ms: Option<u64>) -> u64 {
    match user_timeout_ms {
        Some(ut) if ut > elapsed_ms => rto_ms.min(ut - elapsed_ms),
        Some(_) => 1,
        None => rto_ms,
    }
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
///
/// With `TCP_USER_TIMEOUT` the user timeout replaces the modelled budget (`tcp_retries2` no
/// longer counts), and every timer after a retransmission is cut to what is left of it
/// (`tcp_clamp_rto_to_user_timeout`): the connection dies exactly `user_timeout` after the
/// first retransmission, the last RTO shortened to fit.
pub fn data(p: DataRto) -> Schedule {
    let budget = p
        .user_timeout_ms
        .unwrap_or_else(|| model_timeout_ms(p.boundary, RTO_MIN_MS, p.rto_max_ms));
    let first = p.first_rto_ms.max(1);
    let mut t = first;
    let mut at = vec![first];
    let mut rto = (first * 2).min(p.rto_max_ms);
    for _ in 0..64 {
        t += clamp_to_user_timeout(rto, t - first, p.user_timeout_ms);
        if t - first >= budget {
            break;
        }
        at.push(t);
        rto = (rto * 2).min(p.rto_max_ms);
    }
    Schedule {
        retransmit_at_ms: at,
        give_up_ms: t,
        budget_ms: budget,
    }
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
    fn user_timeout_cuts_the_last_rto_to_end_at_it() {
        // TCP_USER_TIMEOUT=3000 from the first retransmission at 208 ms: RTOs 416, 832, 1664
        // would put the next timer at 6.4 s; tcp_clamp_rto_to_user_timeout() makes it fire
        // 88 ms after the fourth retransmit, exactly 3 s after the first.
        let s = data(DataRto {
            boundary: 15,
            first_rto_ms: 208,
            rto_max_ms: RTO_MAX_MS,
            user_timeout_ms: Some(3000),
        });
        assert_eq!(s.retransmit_at_ms, [208, 624, 1456, 3120]);
        assert_eq!((s.give_up_ms, s.budget_ms), (208 + 3000, 3000));
        // A user timeout longer than tcp_retries2 would allow is obeyed too.
        let long = data(DataRto {
            boundary: 1,
            first_rto_ms: 200,
            rto_max_ms: RTO_MAX_MS,
            user_timeout_ms: Some(10_000),
        });
        assert_eq!(long.give_up_ms, 10_200);
        // SYN_SENT: counted from the SYN; the retransmit cap still applies.
        let s = syn_sent(SynSent {
            syn_retries: 6,
            linear_timeouts: 4,
            rto_max_ms: RTO_MAX_MS,
            user_timeout_ms: Some(4500),
        });
        assert_eq!(s.retransmit_at_ms, [1000, 2000, 3000, 4000]);
        assert_eq!(s.give_up_ms, 4500);
        let capped = syn_sent(SynSent {
            syn_retries: 1,
            linear_timeouts: 0,
            rto_max_ms: RTO_MAX_MS,
            user_timeout_ms: Some(60_000),
        });
        assert_eq!((capped.retransmits(), capped.give_up_ms), (1, 3000));
    }

    #[test]
    fn timers_fire_late_by_their_wheel_granule() {
        // HZ=250: 1 s is 250 jiffies (level 1, 8-jiffy buckets): up to 9 jiffies = 36 ms.
        assert_eq!(timer_late_max_ms(1000, Some(250)), 36);
        // 2 s (500 jiffies) still level 1; 4 s (1000 jiffies) level 2: 65 jiffies.
        assert_eq!(timer_late_max_ms(2000, Some(250)), 36);
        assert_eq!(timer_late_max_ms(4000, Some(250)), 260);
        // 60 s (15000 jiffies) level 3: 513 jiffies.
        assert_eq!(timer_late_max_ms(60_000, Some(250)), 2052);
        // Short timers (under 63 jiffies): level 0, the jiffy and the one rounded up.
        assert_eq!(timer_late_max_ms(50, Some(1000)), 2);
        assert_eq!(timer_late_max_ms(200, Some(1000)), 9);
        // The syn_retries=2 schedule (five 1 s timers, then 2 s) at HZ=250: measured 7.13 s.
        let s = syn(2, 4);
        assert_eq!(s.late_max_ms(Some(250)), 6 * 36);
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
