//! The budgets a namespace's sysctls imply, for `tcptrace sysctl`: how long each kind of
//! give-up takes with these values, by the same arithmetic the rules use.
use crate::{
    budget::{self, DataRto, SynSent, secs},
    sysctl::{self as sc, Sysctls},
};

/// One derived budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Short key for JSON.
    pub key: &'static str,
    pub ms: u64,
    /// The sentence for people.
    pub text: String,
}

fn int(sys: &Sysctls, name: &str) -> u64 {
    sys.int_or_default(name).max(0) as u64
}

pub fn budgets(sys: &Sysctls) -> Vec<Budget> {
    let rto_max = sys.rto_max_ms();
    let syn_retries = int(sys, sc::SYN_RETRIES) as u32;
    let syn = budget::syn_sent(SynSent {
        syn_retries,
        linear_timeouts: sys.int(sc::SYN_LINEAR_TIMEOUTS).unwrap_or(0).max(0) as u32,
        rto_max_ms: rto_max,
        user_timeout_ms: None,
    });
    let synack = budget::synack(int(sys, sc::SYNACK_RETRIES) as u32, rto_max);
    let data = |boundary| {
        budget::data(DataRto {
            boundary,
            first_rto_ms: budget::RTO_MIN_MS,
            rto_max_ms: rto_max,
            user_timeout_ms: None,
        })
    };
    let retries2 = data(int(sys, sc::RETRIES2) as u32);
    let route =
        budget::model_timeout_ms(int(sys, sc::RETRIES1) as u32, budget::RTO_MIN_MS, rto_max);
    let orphan_sysctl = int(sys, sc::ORPHAN_RETRIES) as u32;
    let orphan = data(budget::orphan_retries(orphan_sysctl, true));
    let fin = budget::fin_wait2_ms(int(sys, sc::FIN_TIMEOUT) * 1000, budget::RTO_MIN_MS);
    let ka = budget::keepalive_ms(
        int(sys, sc::KEEPALIVE_TIME) * 1000,
        int(sys, sc::KEEPALIVE_INTVL) * 1000,
        int(sys, sc::KEEPALIVE_PROBES) as u32,
        None,
    );
    let ports = sys
        .port_range()
        .map_or(0, |(lo, hi)| u64::from(hi.saturating_sub(lo)) + 1);
    vec![
        Budget {
            key: "connect_timeout",
            ms: syn.give_up_ms,
            text: format!(
                "connect() to a silent peer gives up after ≈{} with {} SYN retransmits (tcp_syn_retries={syn_retries}{})",
                secs(syn.give_up_ms),
                syn.retransmits(),
                sys.int(sc::SYN_LINEAR_TIMEOUTS)
                    .map_or(String::new(), |l| format!(", the first {l} 1 s apart"))
            ),
        },
        Budget {
            key: "half_open_timeout",
            ms: synack.give_up_ms,
            text: format!(
                "a half-open handshake is dropped after {} and {} SYN-ACK retransmits",
                secs(synack.give_up_ms),
                synack.retransmits()
            ),
        },
        Budget {
            key: "data_timeout",
            ms: retries2.give_up_ms,
            text: format!(
                "an established connection whose peer stops acknowledging gives up after ≈{} ({} retransmits at the minimum RTO); the route is suspected after {}",
                secs(retries2.give_up_ms),
                retries2.retransmits(),
                secs(route)
            ),
        },
        Budget {
            key: "orphan_fin_timeout",
            ms: orphan.give_up_ms,
            text: format!(
                "a closed socket retransmits its FIN for ≈{} ({} retransmits{})",
                secs(orphan.give_up_ms),
                orphan.retransmits(),
                if orphan_sysctl == 0 {
                    "; tcp_orphan_retries=0 means 8"
                } else {
                    ""
                }
            ),
        },
        Budget {
            key: "fin_wait2_timeout",
            ms: fin,
            text: format!(
                "an orphaned FIN_WAIT2 waits {} for the peer's FIN",
                secs(fin)
            ),
        },
        Budget {
            key: "keepalive_timeout",
            ms: ka,
            text: format!(
                "an idle SO_KEEPALIVE connection to a dead peer is reset after {} (time + probes × intvl)",
                secs(ka)
            ),
        },
        Budget {
            key: "time_wait",
            ms: budget::TIME_WAIT_MS,
            text: format!(
                "TIME_WAIT lasts 60 s (fixed); {ports} local ports per destination allow ≈{} new connections/s to one destination without tcp_tw_reuse",
                ports / 60
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_known_numbers() {
        let b = budgets(&Sysctls::defaults(None));
        let get = |k| b.iter().find(|x| x.key == k).unwrap().ms;
        assert_eq!(get("connect_timeout"), 131_000);
        assert_eq!(get("half_open_timeout"), 63_000);
        assert_eq!(get("orphan_fin_timeout"), 204_600);
        assert_eq!(get("fin_wait2_timeout"), 60_000);
        assert_eq!(get("keepalive_timeout"), 7_875_000);
        assert_eq!(get("data_timeout"), 1_044_600);
    }
}
