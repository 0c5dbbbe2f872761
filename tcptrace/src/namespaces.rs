//! Keeps each traced namespace's facts fresh for the diagnosis rules: its sysctls when it is
//! first seen (before its first connection can finish) and again every [`REFRESH_NS`]; on
//! every tick a sample of its TcpExt counters, TIME_WAIT sockets per destination and listener
//! queues. Everything goes through the pipeline, so `--events` recordings carry it.
use std::{collections::HashMap, io, net::IpAddr, path::PathBuf};

use tcptrace_core::{
    diagnose::netns::{Listener, NetnsSample},
    event::Event,
    tcp::TcpState,
};

use crate::{
    augment::Augmenter,
    diag::{netns_paths, own_netns, read_namespace},
    pipeline::Pipeline,
};

/// Sysctls are read again this often (they can change while we run).
const REFRESH_NS: u64 = 5_000_000_000;
/// A namespace is sampled for this long after its last event (TIME_WAIT outlives them).
const ACTIVE_NS: u64 = 120_000_000_000;
/// Destinations listed per sample.
const TOP_DESTS: usize = 8;

#[derive(Debug, Default)]
struct Known {
    last_event_ns: u64,
    sysctls_read_ns: Option<u64>,
    failed: bool,
}

pub struct Namespaces {
    enabled: bool,
    hz: Option<u32>,
    own_ns: u32,
    /// Namespaces of interest (empty: all).
    netns_filter: Vec<u32>,
    paths: HashMap<u32, PathBuf>,
    known: HashMap<u32, Known>,
    /// The namespace of the previous event: most events repeat it, so no map lookup.
    last: Option<u32>,
}

impl Namespaces {
    pub fn new(enabled: bool, hz: Option<u32>, netns_filter: Vec<u32>) -> Self {
        Self {
            enabled,
            hz,
            own_ns: own_netns().unwrap_or(0),
            netns_filter,
            paths: HashMap::new(),
            known: HashMap::new(),
            last: None,
        }
    }

    /// Notes the event's namespace; one seen for the first time is read at once.
    pub fn observe(&mut self, ev: &Event, pipeline: &mut Pipeline) -> io::Result<()> {
        let Some(ns) = ev.netns.filter(|_| self.enabled) else {
            return Ok(());
        };
        if self.last == Some(ns) {
            return Ok(());
        }
        self.last = Some(ns);
        if !self.netns_filter.is_empty() && !self.netns_filter.contains(&ns) {
            return Ok(());
        }
        let k = self.known.entry(ns).or_default();
        k.last_event_ns = k.last_event_ns.max(ev.ts_ns);
        if k.sysctls_read_ns.is_none() && !k.failed {
            // First sight: sysctls before its first connection can finish, and the counters
            // as the baseline later samples are compared with.
            if let Some(tcpext) = self.read(ns, ev.ts_ns, true, pipeline)? {
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

    /// Reads a namespace; with `sysctls`, its sysctls and MTUs too. Returns its counters.
    fn read(
        &mut self,
        ns: u32,
        now_ns: u64,
        sysctls: bool,
        pipeline: &mut Pipeline,
    ) -> io::Result<Option<Vec<(String, u64)>>> {
        let path = if ns == self.own_ns {
            None
        } else {
            if !self.paths.contains_key(&ns) {
                self.paths = netns_paths();
            }
            match self.paths.get(&ns) {
                Some(p) => Some(p.clone()),
                None => {
                    self.fail(ns, "no process or /run/netns entry holds it");
                    return Ok(None);
                }
            }
        };
        let reading = match read_namespace(path.as_deref(), sysctls, self.hz) {
            Ok(r) => r,
            Err(e) => {
                self.fail(ns, &e.to_string());
                return Ok(None);
            }
        };
        if let Some(s) = reading.sysctls {
            self.known.entry(ns).or_default().sysctls_read_ns = Some(now_ns);
            pipeline.set_sysctls(now_ns, ns, s)?;
            for (addr, mtu) in reading.mtus {
                pipeline.mtus.insert((ns, addr), mtu);
            }
        }
        Ok(Some(reading.tcpext))
    }

    fn fail(&mut self, ns: u32, why: &str) {
        let k = self.known.entry(ns).or_default();
        if !k.failed {
            k.failed = true;
            eprintln!(
                "tcptrace: warning: sysctls of netns {ns} unreadable ({why}); its diagnoses assume kernel defaults"
            );
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
        let active: Vec<u32> = self
            .known
            .iter()
            .filter(|(_, k)| !k.failed && now_ns.saturating_sub(k.last_event_ns) < ACTIVE_NS)
            .map(|(ns, _)| *ns)
            .collect();
        for ns in active {
            let stale = self.known[&ns]
                .sysctls_read_ns
                .is_none_or(|t| now_ns.saturating_sub(t) >= REFRESH_NS);
            let Some(tcpext) = self.read(ns, now_ns, stale, pipeline)? else {
                continue;
            };
            let mut sample = NetnsSample {
                netns: ns,
                ts_ns: now_ns,
                tcpext,
                ..NetnsSample::default()
            };
            let states = (1 << TcpState::TIME_WAIT.0) | (1 << TcpState::LISTEN.0);
            if let Some(socks) = augment.dump_netns(ns, states) {
                let mut by_dest: HashMap<(IpAddr, u16), u64> = HashMap::new();
                for s in socks {
                    if s.state == TcpState::LISTEN.0 {
                        sample.listeners.push(Listener {
                            addr: s.tuple.laddr,
                            port: s.tuple.lport,
                            queued: s.rqueue,
                            backlog: s.wqueue,
                        });
                    } else {
                        // Timewait sockets, whether their substate is TIME_WAIT or an
                        // orphaned FIN_WAIT2: each holds its port.
                        sample.time_wait_total += 1;
                        *by_dest.entry((s.tuple.raddr, s.tuple.rport)).or_default() += 1;
                    }
                }
                let mut dests: Vec<(IpAddr, u16, u64)> =
                    by_dest.into_iter().map(|((a, p), n)| (a, p, n)).collect();
                dests.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
                dests.truncate(TOP_DESTS);
                sample.time_wait_by_dest = dests;
                sample.listeners.sort_by_key(|l| (l.addr, l.port));
            }
            pipeline.sample(&sample)?;
        }
        Ok(())
    }
}
