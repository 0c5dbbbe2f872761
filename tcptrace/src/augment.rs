//! Facts the tracepoints cannot give, asked of the kernel's socket table (sock_diag) in the
//! connection's own network namespace: the timewait socket a closed connection became, whether
//! a half-open handshake's request socket still exists, and the sockets that predate tracing
//! or are still open at exit. Each answer becomes an [`Event`], so `replay` sees it too.
use std::collections::HashMap;

use tcptrace_common::{AF_INET, AF_INET6, Filter};
use tcptrace_core::{
    event::{Comm, Event, EventKind, Family},
    lifecycle::ConnTable,
    snapshot::{Field, SockSnapshot},
    tcp::TcpState,
};

use crate::diag::{DiagSock, NetnsDiag, NetnsPaths, TcpInfo, Tuple, socket_owners};

/// sock_diag lookups per second at most; beyond it timewait confirmations are skipped (the
/// records say `time_wait_unconfirmed`) so a connection storm cannot make us a storm too.
const LOOKUPS_PER_SEC: u32 = 2000;
/// A half-open handshake is checked once it has had no SYN-ACK retransmit for this long.
const HALF_OPEN_IDLE_NS: u64 = 1_500_000_000;

/// Full-socket states of a seed dump (everything but TIME_WAIT, CLOSE and request sockets).
const SEED_STATES: u32 =
    (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11);

pub struct Augmenter {
    enabled: bool,
    netns_filter: Vec<u32>,
    /// The user's family/port filters, applied to dumped sockets as the kernel applies them
    /// to events.
    filter: Filter,
    paths: NetnsPaths,
    diag: HashMap<u32, Option<NetnsDiag>>,
    pending_tw: Vec<Event>,
    window_start_ns: u64,
    used: u32,
    /// Lookups not made because of the budget.
    pub skipped: u64,
    /// Namespaces sock_diag could not be opened in, reported once each.
    warned: Vec<u32>,
    /// `--cgroup`, applied to dumped sockets as the kernel applies it to events.
    cgroup: Option<crate::cgroups::CgroupFilter>,
    /// The filter's subtree as of the current dump.
    cgroup_ids: std::collections::HashSet<u64>,
}

fn tuple(ev: &Event) -> Tuple {
    Tuple {
        laddr: ev.laddr,
        lport: ev.lport,
        raddr: ev.raddr,
        rport: ev.rport,
    }
}

fn fact(like: &Event, ts_ns: u64, kind: EventKind) -> Event {
    Event {
        ts_ns,
        pid: 0,
        tid: 0,
        comm: Comm::default(),
        kind,
        ..*like
    }
}

fn snapshot(info: &TcpInfo) -> SockSnapshot {
    let mut s = SockSnapshot::default();
    s.set(Field::BytesAcked, info.bytes_acked);
    s.set(Field::BytesReceived, info.bytes_received);
    s.set(Field::SrttUs, u64::from(info.rtt_us));
    s.set(Field::TotalRetrans, u64::from(info.total_retrans));
    s.set(Field::MssCache, u64::from(info.snd_mss));
    s.set(Field::Sack, u64::from(info.sack));
    s.set(Field::Timestamps, u64::from(info.timestamps));
    s.set(Field::WscaleOk, u64::from(info.wscale));
    s.set(Field::SndWscale, u64::from(info.snd_wscale));
    s.set(Field::RcvWscale, u64::from(info.rcv_wscale));
    s
}

impl Augmenter {
    /// `enabled` false (e.g. no BTF, so no namespaces): no facts at all.
    pub fn new(enabled: bool, netns_filter: Vec<u32>, filter: Filter) -> Self {
        Self {
            enabled,
            netns_filter,
            filter,
            paths: NetnsPaths::new(),
            diag: HashMap::new(),
            pending_tw: Vec::new(),
            window_start_ns: 0,
            used: 0,
            skipped: 0,
            warned: Vec::new(),
            cgroup: None,
            cgroup_ids: Default::default(),
        }
    }

    pub fn set_cgroup_filter(&mut self, f: Option<crate::cgroups::CgroupFilter>) {
        self.cgroup = f;
    }

    /// Notes what an event will need asked.
    pub fn observe(&mut self, ev: &Event) {
        if !self.enabled {
            return;
        }
        if let EventKind::State {
            old: TcpState::FIN_WAIT2 | TcpState::CLOSING,
            new: TcpState::CLOSE,
            ..
        } = ev.kind
            && ev.netns.is_some()
        {
            self.pending_tw.push(*ev);
        }
    }

    fn budget(&mut self, now_ns: u64) -> bool {
        if now_ns.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            self.window_start_ns = now_ns;
            self.used = 0;
        }
        if self.used >= LOOKUPS_PER_SEC {
            self.skipped += 1;
            return false;
        }
        self.used += 1;
        true
    }

    /// The sock_diag socket of a namespace, opened on first use.
    fn socket(&mut self, netns: u32) -> Option<&mut NetnsDiag> {
        if !self.diag.contains_key(&netns) {
            let opened = match self.paths.locate(netns) {
                Ok(None) => NetnsDiag::current(),
                Ok(Some(p)) => NetnsDiag::open(&p),
                Err(e) => Err(e),
            };
            let d = match opened {
                Ok(d) => Some(d),
                Err(e) => {
                    if !self.warned.contains(&netns) {
                        self.warned.push(netns);
                        log::warn!("sock_diag in netns {netns}: {e}");
                    }
                    None
                }
            };
            self.diag.insert(netns, d);
        }
        self.diag.get_mut(&netns)?.as_mut()
    }

    /// Asks the namespace's socket; a failure means the namespace went away, so the socket is
    /// forgotten.
    fn ask<T>(
        &mut self,
        netns: u32,
        q: impl FnOnce(&mut NetnsDiag) -> std::io::Result<T>,
    ) -> Option<T> {
        let d = self.socket(netns)?;
        match q(d) {
            Ok(v) => Some(v),
            Err(_) => {
                self.diag.remove(&netns);
                None
            }
        }
    }

    fn lookup(&mut self, netns: u32, v6: bool, t: &Tuple) -> Option<Option<DiagSock>> {
        self.ask(netns, |d| d.lookup(v6, t))
    }

    /// Asks what this batch needs: timewait sockets of connections that just closed, and
    /// (on the periodic tick) whether idle half-open handshakes still exist.
    pub fn resolve(&mut self, now_ns: u64, tick: bool, table: &ConnTable, out: &mut Vec<Event>) {
        if !self.enabled {
            return;
        }
        let pending = std::mem::take(&mut self.pending_tw);
        for ev in &pending {
            if !self.budget(now_ns) {
                continue;
            }
            let netns = ev.netns.unwrap_or(0);
            let Some(found) = self.lookup(netns, ev.family == Family::Inet6, &tuple(ev)) else {
                continue;
            };
            let kind = match found.filter(|s| s.mini) {
                Some(s) => EventKind::TimeWait {
                    state: Some(TcpState(s.state)),
                    timer_ms: s.timer_ms,
                },
                None => EventKind::TimeWait {
                    state: None,
                    timer_ms: None,
                },
            };
            out.push(fact(ev, now_ns, kind));
        }
        self.pending_tw = pending;
        self.pending_tw.clear();
        if !tick {
            return;
        }
        for (netns, sk, t) in table.idle_half_open(now_ns.saturating_sub(HALF_OPEN_IDLE_NS)) {
            let family = if t.laddr.is_ipv6() {
                Family::Inet6
            } else {
                Family::Inet
            };
            let tup = Tuple {
                laddr: t.laddr,
                lport: t.lport,
                raddr: t.raddr,
                rport: t.rport,
            };
            let Some(found) = self.lookup(netns, family == Family::Inet6, &tup) else {
                continue;
            };
            if found.is_some_and(|s| s.state == TcpState::SYN_RECV.0) {
                continue;
            }
            out.push(Event {
                ts_ns: now_ns,
                sk,
                netns: Some(netns),
                cgroup: None,
                pid: 0,
                tid: 0,
                comm: Comm::default(),
                family,
                laddr: t.laddr,
                lport: t.lport,
                raddr: t.raddr,
                rport: t.rport,
                kind: EventKind::RequestGone,
            });
        }
    }

    /// Hands each socket of a namespace in `states` (a bitmask of state numbers), without
    /// tcp_info, to `each`; false when the namespace could not be asked.
    pub fn dump_netns(&mut self, netns: u32, states: u32, each: &mut dyn FnMut(DiagSock)) -> bool {
        self.enabled
            && self
                .ask(netns, |d| d.dump_each(states, false, each))
                .is_some()
    }

    fn namespaces(&mut self) -> Vec<u32> {
        let mut all = self.paths.all();
        all.retain(|ns| self.netns_filter.is_empty() || self.netns_filter.contains(ns));
        all
    }

    fn dump_all(&mut self, now_ns: u64, at_exit: bool, out: &mut Vec<Event>) {
        if !self.enabled {
            return;
        }
        let owners = socket_owners();
        if let Some(f) = &self.cgroup {
            self.cgroup_ids = f.subtree_ids();
        }
        let states = if at_exit {
            SEED_STATES & !(1 << 10)
        } else {
            SEED_STATES
        };
        for netns in self.namespaces() {
            let Some(mut socks) = self.ask(netns, |d| d.dump(states, true)) else {
                continue;
            };
            // Listeners first: they tell which seeded sockets are server side.
            socks.sort_by_key(|s| s.state != TcpState::LISTEN.0);
            for s in socks.into_iter().filter(|s| !s.mini && self.wanted(s)) {
                let (pid, comm) = owners
                    .get(&s.inode)
                    .map_or((0, Comm::default()), |(p, c)| (*p, Comm::new(c)));
                let family = if s.tuple.laddr.is_ipv6() {
                    Family::Inet6
                } else {
                    Family::Inet
                };
                out.push(Event {
                    ts_ns: now_ns,
                    sk: 0,
                    netns: Some(netns),
                    cgroup: s.cgroup,
                    pid,
                    tid: 0,
                    comm,
                    family,
                    laddr: s.tuple.laddr,
                    lport: s.tuple.lport,
                    raddr: s.tuple.raddr,
                    rport: s.tuple.rport,
                    kind: EventKind::Existing {
                        state: TcpState(s.state),
                        at_exit,
                        sock: s.info.as_ref().map(snapshot),
                    },
                });
            }
        }
    }

    fn wanted(&self, s: &DiagSock) -> bool {
        let f = &self.filter;
        let family = if s.tuple.laddr.is_ipv6() {
            AF_INET6
        } else {
            AF_INET
        };
        let listed = |port: u16, n: u8, list: &[u16]| {
            n == 0 || list[..usize::from(n).min(list.len())].contains(&port)
        };
        (f.family == 0 || f.family == family)
            && listed(s.tuple.lport, f.n_lports, &f.lports)
            && listed(s.tuple.rport, f.n_rports, &f.rports)
            && (self.cgroup.is_none() || s.cgroup.is_some_and(|c| self.cgroup_ids.contains(&c)))
    }

    /// The sockets that exist as tracing starts.
    pub fn seed(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        self.dump_all(now_ns, false, out);
    }

    /// The sockets still open as tracing stops, with their numbers.
    pub fn at_exit(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        self.dump_all(now_ns, true, out);
    }
}
