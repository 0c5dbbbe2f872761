//! Facts the tracepoints cannot give, asked of the kernel's socket table (sock_diag) in the
//! connection's own network namespace: the timewait socket a closed connection became, whether
//! a half-open handshake's request socket still exists, and the sockets that predate tracing
//! or are still open at exit. Each answer becomes an [`Event`], so `replay` sees it too.
use std::collections::HashMap;

use tcptrace_common::{AF_INET, AF_INET6, Filter};
use tcptrace_core::{
    event::{Comm, Event, EventKind, Family},
    lifecycle::{self, ConnTable},
    snapshot::{Field, SockSnapshot},
    tcp::TcpState,
};

use crate::diag::{DiagSock, NetnsDiag, NetnsPaths, TcpInfo, Tuple, socket_owners};

/// sock_diag lookups per second at most; beyond it timewait confirmations are skipped (the
/// records say `time_wait_unconfirmed`) so a connection storm cannot make us a storm too.
const LOOKUPS_PER_SEC: u32 = 2000;
/// Follow-up looks (watched FIN_WAIT2 hand-offs, half-open requests) use at most this much of
/// a second's budget, so the first look at every new hand-off keeps the rest.
const FOLLOW_UPS: u32 = LOOKUPS_PER_SEC / 2;
/// After a kernel timer should have run out, its socket is looked at again this often until
/// it is found gone (the timer wheel fires late by up to a granule of the timer's level).
const RELOOK_NS: u64 = 100_000_000;
/// Watched sockets are scanned for due looks at most this often (the looks are 0.1 s apart at
/// the closest; a busy table is not walked on every 20 ms drain).
const SCAN_NS: u64 = 50_000_000;
/// A timewait socket handed off in FIN_WAIT2 is first looked at again this soon; the next looks
/// back off (doubling) until its timer runs out.
const FIN_WAIT2_FIRST_RELOOK_NS: u64 = 200_000_000;

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
    /// When each watched socket (FIN_WAIT2 timewait sockets by 4-tuple, request sockets by
    /// address) was last looked at.
    looked: HashMap<(u32, u64, lifecycle::TupleKey), u64>,
    /// When the watched sockets were last scanned.
    scanned_ns: u64,
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

fn family_of(t: &lifecycle::TupleKey) -> Family {
    if t.laddr.is_ipv6() {
        Family::Inet6
    } else {
        Family::Inet
    }
}

fn tuple_of(t: &lifecycle::TupleKey) -> Tuple {
    Tuple {
        laddr: t.laddr,
        lport: t.lport,
        raddr: t.raddr,
        rport: t.rport,
    }
}

/// A sock_diag fact about a 4-tuple (no task, no cgroup).
fn fact_at(t: &lifecycle::TupleKey, sk: u64, family: Family, ts_ns: u64, kind: EventKind) -> Event {
    Event {
        ts_ns,
        sk,
        netns: Some(t.netns),
        cgroup: None,
        pid: 0,
        tid: 0,
        comm: Comm::default(),
        family,
        laddr: t.laddr,
        lport: t.lport,
        raddr: t.raddr,
        rport: t.rport,
        kind,
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
            looked: HashMap::new(),
            scanned_ns: 0,
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

    /// Takes one look from this second's budget, if fewer than `limit` were taken.
    fn budget(&mut self, now_ns: u64, limit: u32) -> bool {
        if now_ns.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            self.window_start_ns = now_ns;
            self.used = 0;
        }
        if self.used >= limit {
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

    /// Asks what this batch needs: timewait sockets of connections that just closed, those
    /// handed off in FIN_WAIT2 whose fate is not known yet, and request sockets of half-open
    /// handshakes whose timer should have dropped them.
    pub fn resolve(&mut self, now_ns: u64, table: &ConnTable, out: &mut Vec<Event>) {
        if !self.enabled {
            return;
        }
        let pending = std::mem::take(&mut self.pending_tw);
        for ev in &pending {
            if let Some(kind) = self.time_wait_fact(
                ev.netns.unwrap_or(0),
                ev.family,
                &tuple(ev),
                now_ns,
                LOOKUPS_PER_SEC,
            ) {
                out.push(fact(ev, now_ns, kind));
            }
        }
        self.pending_tw = pending;
        self.pending_tw.clear();
        if now_ns.saturating_sub(self.scanned_ns) < SCAN_NS {
            return;
        }
        self.scanned_ns = now_ns;
        let mut watched = std::collections::HashSet::new();
        let watches: Vec<_> = table.fin_wait2_watches().collect();
        for (t, w) in watches {
            let key = (t.netns, 0, t);
            watched.insert(key);
            let last = self
                .looked
                .get(&key)
                .copied()
                .unwrap_or(w.last_seen_ns)
                .max(w.last_seen_ns);
            let expiry = w.expires_ns().unwrap_or(w.first_ns + 60_000_000_000);
            let due = if last < expiry {
                let backoff = (last - w.first_ns).max(FIN_WAIT2_FIRST_RELOOK_NS);
                (last + backoff).min(expiry)
            } else {
                last + RELOOK_NS
            };
            if now_ns < due {
                continue;
            }
            self.looked.insert(key, now_ns);
            let family = family_of(&t);
            let tup = tuple_of(&t);
            if let Some(kind) = self.time_wait_fact(t.netns, family, &tup, now_ns, FOLLOW_UPS) {
                out.push(fact_at(&t, 0, family, now_ns, kind));
            }
        }
        let requests: Vec<_> = table.half_open_requests().collect();
        for r in requests {
            let key = (r.netns, r.sk, r.tuple);
            watched.insert(key);
            let due = match self.looked.get(&key) {
                Some(&last) if last >= r.last_synack_ns => last + RELOOK_NS,
                _ => r.next_timer_ns(tcptrace_core::budget::RTO_MAX_MS),
            };
            if now_ns < due {
                continue;
            }
            if !self.budget(now_ns, FOLLOW_UPS) {
                continue;
            }
            self.looked.insert(key, now_ns);
            let family = family_of(&r.tuple);
            let Some(found) = self.lookup(r.netns, family == Family::Inet6, &tuple_of(&r.tuple))
            else {
                continue;
            };
            if found.is_some_and(|s| s.state == TcpState::SYN_RECV.0) {
                continue;
            }
            out.push(fact_at(
                &r.tuple,
                r.sk,
                family,
                now_ns,
                EventKind::RequestGone,
            ));
        }
        self.looked.retain(|k, _| watched.contains(k));
    }

    /// What the socket table holds for a 4-tuple that went to a timewait socket: its substate
    /// and timer, or none. None when the look could not be made (budget, namespace gone).
    fn time_wait_fact(
        &mut self,
        netns: u32,
        family: Family,
        t: &Tuple,
        now_ns: u64,
        limit: u32,
    ) -> Option<EventKind> {
        if !self.budget(now_ns, limit) {
            return None;
        }
        let found = self.lookup(netns, family == Family::Inet6, t)?;
        Some(match found.filter(|s| s.mini) {
            Some(s) => EventKind::TimeWait {
                state: Some(TcpState(s.state)),
                timer_ms: s.timer_ms,
            },
            None => EventKind::TimeWait {
                state: None,
                timer_ms: None,
            },
        })
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
