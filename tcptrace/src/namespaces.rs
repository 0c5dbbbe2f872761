//! Keeps each traced namespace's facts fresh for the diagnosis rules: its sysctls when it is
//! first seen (before its first connection can finish), again every [`REFRESH_NS`], and when
//! a connection ends whose last state change is newer than the last read (so its diagnosis
//! cites the values in force then, at most every [`REREAD_NS`]); on
//! every tick a sample of its TcpExt counters, TIME_WAIT sockets per destination and listener
//! queues. Everything goes through the pipeline, so `--events` recordings carry it.
use std::{collections::HashMap, fs::File, io, net::IpAddr};

use tcptrace_core::{
    diagnose::netns::{Listener, NetnsSample},
    event::{Event, EventKind},
    sysctl::Sysctls,
    tcp::TcpState,
};

use crate::{
    augment::Augmenter,
    diag::{NetnsPaths, read_namespace, read_tcpext},
    pipeline::Pipeline,
};

/// Sysctls are read again this often (they can change while we run).
const REFRESH_NS: u64 = 5_000_000_000;
/// And when a connection ends whose last state change is newer than the last read, so its
/// diagnosis cites the values in force — at most this often per namespace.
const REREAD_NS: u64 = 200_000_000;
/// A namespace is sampled for this long after its last event (TIME_WAIT outlives them).
const ACTIVE_NS: u64 = 120_000_000_000;
/// Destinations listed per sample.
const TOP_DESTS: usize = 8;
/// A namespace is sampled every tick, or every [`SLOW_SAMPLE_NS`] (the findings' repeat
/// interval) once its dump of TIME_WAIT and listening sockets exceeds [`BIG_DUMP`]: dumping a
/// hundred thousand timewait sockets every second would cost the host more than the pressure
/// it reports.
const BIG_DUMP: u64 = 20_000;
const SLOW_SAMPLE_NS: u64 = 10_000_000_000;

#[derive(Debug, Default)]
struct Known {
    last_event_ns: u64,
    sysctls_read_ns: Option<u64>,
    /// Its /proc/net/netstat, opened inside it at the first read.
    netstat: Option<File>,
    failed: bool,
    /// No sample before this (see [`BIG_DUMP`]).
    next_sample_ns: u64,
    /// What the last read found (a re-read records only changes).
    sysctls: Option<Sysctls>,
    mtus: Vec<(IpAddr, u32)>,
    /// The last re-read at a connection's end.
    reread_ns: u64,
}

pub struct Namespaces {
    enabled: bool,
    /// Namespaces are named (events carry them).
    naming: bool,
    /// Namespaces whose name was looked for, and the last one (most events repeat it).
    named: std::collections::HashSet<u32>,
    last_named: Option<u32>,
    hz: Option<u32>,
    /// Namespaces of interest (empty: all).
    netns_filter: Vec<u32>,
    paths: NetnsPaths,
    known: HashMap<u32, Known>,
    /// The namespace of the previous event: most events repeat it, so no map lookup.
    last: Option<u32>,
    /// An event of `last` arrived since the previous tick (its activity time is due).
    last_seen: bool,
    /// Re-reads made because a connection ended after its namespace's last read.
    pub rereads: u64,
}

impl Namespaces {
    /// `naming`: events carry namespaces (BTF); `enabled`: diagnoses want their facts too.
    pub fn new(naming: bool, enabled: bool, hz: Option<u32>, netns_filter: Vec<u32>) -> Self {
        Self {
            enabled,
            naming,
            named: std::collections::HashSet::new(),
            last_named: None,
            hz,
            netns_filter,
            paths: NetnsPaths::new(),
            known: HashMap::new(),
            last: None,
            last_seen: false,
            rereads: 0,
        }
    }

    /// Notes the event's namespace; one seen for the first time is named and read at once.
    pub fn observe(&mut self, ev: &Event, pipeline: &mut Pipeline) -> io::Result<()> {
        if let Some(ns) = ev.netns.filter(|_| self.naming)
            && self.last_named.replace(ns) != Some(ns)
            && self.named.insert(ns)
            && let Some(name) = crate::diag::netns_names().remove(&ns)
        {
            pipeline.learn_netns_name(ev.ts_ns, ns, &name)?;
        }
        let Some(ns) = ev.netns.filter(|_| self.enabled) else {
            return Ok(());
        };
        if let EventKind::State {
            new: TcpState::CLOSE,
            ..
        } = ev.kind
        {
            self.at_close(ns, ev, pipeline)?;
        }
        if self.last == Some(ns) {
            self.last_seen = true;
            return Ok(());
        }
        self.last = Some(ns);
        self.last_seen = false;
        if !self.netns_filter.is_empty() && !self.netns_filter.contains(&ns) {
            return Ok(());
        }
        let k = self.known.entry(ns).or_default();
        k.last_event_ns = k.last_event_ns.max(ev.ts_ns);
        if k.sysctls_read_ns.is_none() && !k.failed {
            // First sight: sysctls before its first connection can finish, and the counters
            // as the baseline later samples are compared with.
            self.read(ns, ev.ts_ns, pipeline)?;
            if let Some(tcpext) = self.counters(ns) {
                pipeline.sample(&NetnsSample {
                    netns: ns,
                    ts_ns: ev.ts_ns,
                    tcpext,
                    ..NetnsSample::default()
                })?;
            }
        }
        Ok(())
    }

    /// A connection ends: if the namespace's sysctls were read before its last state change,
    /// they may have changed since: read them again (rate-limited), recording them only if
    /// they did.
    fn at_close(&mut self, ns: u32, ev: &Event, pipeline: &mut Pipeline) -> io::Result<()> {
        let Some(k) = self.known.get_mut(&ns).filter(|k| !k.failed) else {
            return Ok(());
        };
        let (Some(read_ns), Some(changed_ns)) = (k.sysctls_read_ns, pipeline.last_change_ns(ev))
        else {
            return Ok(());
        };
        if read_ns >= changed_ns || ev.ts_ns.saturating_sub(k.reread_ns) < REREAD_NS {
            return Ok(());
        }
        k.reread_ns = ev.ts_ns;
        self.rereads += 1;
        self.read_inner(ns, ev.ts_ns, pipeline, true)
    }

    /// Visits a namespace for its sysctls and MTUs (and, the first time, its netstat file).
    fn read(&mut self, ns: u32, now_ns: u64, pipeline: &mut Pipeline) -> io::Result<()> {
        self.read_inner(ns, now_ns, pipeline, false)
    }

    /// [`Namespaces::read`]; with `only_changes`, what equals the last reading is not
    /// recorded again.
    fn read_inner(
        &mut self,
        ns: u32,
        now_ns: u64,
        pipeline: &mut Pipeline,
        only_changes: bool,
    ) -> io::Result<()> {
        let reading = self
            .paths
            .locate(ns)
            .and_then(|path| read_namespace(path.as_deref(), self.hz));
        let reading = match reading {
            Ok(r) => r,
            Err(e) => {
                self.fail(ns, &e.to_string());
                return Ok(());
            }
        };
        let k = self.known.entry(ns).or_default();
        k.sysctls_read_ns = Some(now_ns);
        k.netstat.get_or_insert(reading.netstat);
        if !(only_changes && k.mtus == reading.mtus) {
            pipeline.set_interfaces(now_ns, ns, &reading.mtus)?;
            k.mtus = reading.mtus;
        }
        if only_changes && k.sysctls.as_ref() == Some(&reading.sysctls) {
            return Ok(());
        }
        k.sysctls = Some(reading.sysctls.clone());
        pipeline.set_sysctls(now_ns, ns, reading.sysctls)
    }

    /// The namespace's TcpExt counters now, from its kept netstat file.
    fn counters(&mut self, ns: u32) -> Option<Vec<(String, u64)>> {
        let file = self.known.get_mut(&ns)?.netstat.as_mut()?;
        match read_tcpext(file) {
            Ok(c) => Some(c),
            Err(e) => {
                self.fail(ns, &e.to_string());
                None
            }
        }
    }

    fn fail(&mut self, ns: u32, why: &str) {
        let k = self.known.entry(ns).or_default();
        if !k.failed {
            k.failed = true;
            log::warn!("netns {ns} unreadable ({why}); its diagnoses assume kernel defaults");
        }
    }

    /// The periodic look at every active namespace.
    pub fn tick(
        &mut self,
        now_ns: u64,
        augment: &mut Augmenter,
        pipeline: &mut Pipeline,
    ) -> io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if let Some(k) = self
            .last
            .filter(|_| self.last_seen)
            .and_then(|ns| self.known.get_mut(&ns))
        {
            k.last_event_ns = k.last_event_ns.max(now_ns);
        }
        self.last_seen = false;
        // Namespaces quiet for long are forgotten (closing their netstat file); an event
        // brings them back.
        self.known
            .retain(|_, k| k.failed || now_ns.saturating_sub(k.last_event_ns) < ACTIVE_NS);
        let active: Vec<u32> = self
            .known
            .iter()
            .filter(|(_, k)| !k.failed)
            .map(|(ns, _)| *ns)
            .collect();
        for ns in active {
            let stale = self.known[&ns]
                .sysctls_read_ns
                .is_none_or(|t| now_ns.saturating_sub(t) >= REFRESH_NS);
            if stale {
                self.read(ns, now_ns, pipeline)?;
            }
            if self
                .known
                .get(&ns)
                .is_some_and(|k| now_ns < k.next_sample_ns)
            {
                continue;
            }
            let Some(tcpext) = self.counters(ns) else {
                continue;
            };
            let mut sample = NetnsSample {
                netns: ns,
                ts_ns: now_ns,
                tcpext,
                ..NetnsSample::default()
            };
            let states = (1 << TcpState::TIME_WAIT.0) | (1 << TcpState::LISTEN.0);
            let mut dumped = 0u64;
            let mut by_dest: HashMap<(IpAddr, u16), u64> = HashMap::new();
            let mut listeners = Vec::new();
            let mut time_wait_total = 0;
            let answered = augment.dump_netns(ns, states, &mut |s| {
                dumped += 1;
                if s.state == TcpState::LISTEN.0 {
                    listeners.push(Listener {
                        addr: s.tuple.laddr,
                        port: s.tuple.lport,
                        queued: s.rqueue,
                        backlog: s.wqueue,
                    });
                } else {
                    // Timewait sockets, whether their substate is TIME_WAIT or an orphaned
                    // FIN_WAIT2: each holds its port.
                    time_wait_total += 1;
                    *by_dest.entry((s.tuple.raddr, s.tuple.rport)).or_default() += 1;
                }
            });
            if answered {
                let mut dests: Vec<(IpAddr, u16, u64)> =
                    by_dest.into_iter().map(|((a, p), n)| (a, p, n)).collect();
                dests.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
                dests.truncate(TOP_DESTS);
                listeners.sort_by_key(|l| (l.addr, l.port));
                sample.time_wait_total = time_wait_total;
                sample.time_wait_by_dest = dests;
                sample.listeners = listeners;
            }
            if let Some(k) = self.known.get_mut(&ns) {
                // Slightly early, so the tick after the interval takes it.
                k.next_sample_ns = if dumped > BIG_DUMP {
                    now_ns + SLOW_SAMPLE_NS - SLOW_SAMPLE_NS / 10
                } else {
                    0
                };
            }
            pipeline.sample(&sample)?;
        }
        Ok(())
    }
}
