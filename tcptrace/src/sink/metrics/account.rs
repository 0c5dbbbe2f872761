//! What `--metrics` counts, apart from how it is served: connections by role and end, connect,
//! handshake and lifetime histograms, retransmits and resets as they happen, diagnoses and
//! namespace findings, TIME_WAIT sockets per namespace and the tracer's own counters — each
//! under a bounded set of optional labels. It reads no sockets, clocks or files: the sink feeds
//! it the pipeline's events, records and samples, and tests feed it recorded streams.
use std::collections::{BTreeMap, HashMap};

use tcptrace_core::{
    context::Context,
    diagnose::{
        Diagnosis, Severity,
        netns::{NetnsFinding, NetnsSample},
    },
    event::{Event, EventKind, ResetDirection},
    lifecycle::{
        Conn, End, Role,
        conn::{SEGMENT_KINDS, STATE_SLOTS},
    },
    tcp::{SegmentKind, TcpState},
};

use crate::stats::Stats;

/// Label sets (distinct combinations of the optional labels' values) counted apart; beyond
/// it, new combinations are counted under one set whose every optional label is `overflow`.
pub const MAX_LABEL_SETS: usize = 256;
/// The value of every optional label of the set counting what did not fit.
pub const OVERFLOW: &str = "overflow";
/// A label set nothing was counted in for this long is dropped (its series end), making room
/// for new ones: pods and services come and go on a long-running host.
pub const IDLE_NS: u64 = 10 * 60 * 1_000_000_000;
/// Namespaces with their own TIME_WAIT series; the others are summed under `overflow`.
pub const MAX_NAMESPACES: usize = 256;
/// A namespace not sampled for this long has no TIME_WAIT series any more (sampling stops two
/// minutes after its last event, by which time its TIME_WAIT sockets have expired).
const NAMESPACE_STALE_NS: u64 = 60 * 1_000_000_000;
/// Attributions remembered (socket namespace, cgroup, port → label set).
const KEY_CACHE: usize = 4096;

/// An optional label of the connection metrics (`--metrics-labels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Label {
    /// The network namespace's inode.
    Netns,
    /// The innermost systemd unit of the socket's cgroup.
    Unit,
    /// The container id (12 digits, as `docker ps` shows it).
    Container,
    /// The Kubernetes pod UID.
    Pod,
    /// The service port: a server connection's local (listening) port, the port a client
    /// connection connected to.
    Port,
}

impl Label {
    pub const ALL: [Label; 5] = [
        Self::Netns,
        Self::Unit,
        Self::Container,
        Self::Pod,
        Self::Port,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Netns => "netns",
            Self::Unit => "unit",
            Self::Container => "container",
            Self::Pod => "pod",
            Self::Port => "port",
        }
    }
}

/// The optional labels chosen, in a fixed order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Parses label names; an unknown name is an error naming the known ones.
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut labels = Vec::new();
        for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let label = Label::ALL
                .into_iter()
                .find(|l| l.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Label::ALL.iter().map(|l| l.name()).collect();
                    format!("unknown label {name:?} (known: {})", known.join(", "))
                })?;
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
        labels.sort();
        Ok(Self(labels))
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|l| l.name())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn has(&self, l: Label) -> bool {
        self.0.contains(&l)
    }
}

/// Connect and handshake buckets, seconds: loopback and LAN round trips up to the SYN
/// retransmission schedule (the first after 1 s).
pub const CONNECT_BOUNDS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0, 7.0,
];
/// Lifetime buckets, seconds: from a millisecond request to a day-long session.
pub const LIFETIME_BOUNDS: [f64; 11] = [
    0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];
const MAX_BUCKETS: usize = 16;

/// A histogram with fixed bucket bounds (plus +Inf).
#[derive(Clone, Copy, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the one after the last bound is +Inf.
    counts: [u64; MAX_BUCKETS],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    const fn new(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() < MAX_BUCKETS);
        Self {
            bounds,
            counts: [0; MAX_BUCKETS],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, secs: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += secs;
        self.count += 1;
    }

    /// `(upper bound, observations in that bucket)`, ending with +Inf.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
    }
}

/// Roles in label order.
pub const ROLES: [Role; 3] = [Role::Client, Role::Server, Role::Unknown];
/// Ends in label order.
pub const ENDS: [End; 7] = [
    End::Closed,
    End::ResetSent,
    End::ResetReceived,
    End::Refused,
    End::Timeout,
    End::Aborted,
    End::Open,
];

fn role_slot(r: Role) -> usize {
    match r {
        Role::Client => 0,
        Role::Server => 1,
        Role::Unknown => 2,
    }
}

fn end_slot(e: End) -> usize {
    ENDS.iter().position(|x| *x == e).unwrap_or(0)
}

/// The retransmit slot of a state: its number, or the last slot when unknown.
fn state_slot(s: Option<TcpState>) -> usize {
    s.map_or(STATE_SLOTS, |s| usize::from(s.0).min(STATE_SLOTS))
}

/// The state a retransmit slot stands for (`None`: unknown).
pub fn slot_state(i: usize) -> Option<TcpState> {
    (i < STATE_SLOTS).then_some(TcpState(i as u8))
}

/// Everything counted under one label set.
#[derive(Clone, Debug)]
pub struct Counters {
    /// Finished connections by role and end ([`ROLES`] × [`ENDS`]).
    pub ends: [[u64; ENDS.len()]; ROLES.len()],
    /// Time in SYN_SENT of client connections that established.
    pub connect: Histogram,
    /// Time in SYN_RECV of server connections that established.
    pub handshake: Histogram,
    /// Lifetime of finished connections whose start was seen, by role.
    pub lifetime: [Histogram; ROLES.len()],
    /// Retransmissions by state slot and segment kind, as they happen.
    pub retransmits: [[u64; SEGMENT_KINDS]; STATE_SLOTS + 1],
    /// Retransmissions the kernel could not send.
    pub retransmit_failures: [[u64; SEGMENT_KINDS]; STATE_SLOTS + 1],
    /// Resets by (sent, kernel reason), as they happen.
    pub resets: BTreeMap<(bool, Option<u32>), u64>,
    /// Diagnoses of connection records by (rule, severity).
    pub diagnoses: BTreeMap<(&'static str, Severity), u64>,
    /// Namespace-wide findings by (rule, severity).
    pub findings: BTreeMap<(&'static str, Severity), u64>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            ends: Default::default(),
            connect: Histogram::new(&CONNECT_BOUNDS),
            handshake: Histogram::new(&CONNECT_BOUNDS),
            lifetime: [Histogram::new(&LIFETIME_BOUNDS); ROLES.len()],
            retransmits: Default::default(),
            retransmit_failures: Default::default(),
            resets: BTreeMap::new(),
            diagnoses: BTreeMap::new(),
            findings: BTreeMap::new(),
        }
    }
}

/// One combination of the optional labels' values, and what was counted under it.
#[derive(Clone, Debug)]
pub struct LabelSet {
    /// In the order of [`Labels`]; empty when the label does not apply or is unknown.
    pub values: Vec<String>,
    pub counters: Counters,
    /// When something was last counted in it (the sink's clock).
    touched_ns: u64,
}

/// TIME_WAIT sockets of one namespace, as last sampled.
#[derive(Clone, Copy, Debug)]
pub struct TimeWait {
    /// None until a sample with a socket dump came.
    pub sockets: Option<u64>,
    sampled_ns: u64,
    /// Has a series of its own (else summed under `overflow`).
    pub own: bool,
}

/// What is served: a copy the sink publishes once a second.
#[derive(Clone, Debug)]
pub struct Tally {
    pub labels: Labels,
    /// Label sets by slot (`None`: free).
    pub sets: Vec<Option<LabelSet>>,
    /// What did not fit in [`MAX_LABEL_SETS`].
    pub overflow: LabelSet,
    /// Connections, events and findings counted under `overflow`.
    pub overflowed: u64,
    /// Reset reason names seen.
    pub reasons: BTreeMap<u32, String>,
    /// TIME_WAIT sockets by namespace.
    pub time_wait: BTreeMap<u32, TimeWait>,
    /// The pipeline's counters as of the last tick.
    pub stats: Stats,
    /// Incremented at each publication.
    pub generation: u64,
}

impl Tally {
    /// The label sets in use, `overflow` last when anything was counted there.
    pub fn label_sets(&self) -> impl Iterator<Item = &LabelSet> {
        self.sets
            .iter()
            .flatten()
            .chain((self.overflowed > 0).then_some(&self.overflow))
    }
}

/// What a connection or event is attributed to before its label values are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Key {
    netns: Option<u32>,
    cgroup: Option<u64>,
    port: u16,
}

/// The slot of the overflow set.
const OVERFLOW_ID: usize = usize::MAX;

/// The accounting: the [`Tally`] and the bookkeeping that bounds it.
pub struct Account {
    tally: Tally,
    by_values: HashMap<Vec<String>, usize>,
    by_key: HashMap<Key, usize>,
    free: Vec<usize>,
    now_ns: u64,
}

impl Account {
    pub fn new(labels: Labels) -> Self {
        let overflow = LabelSet {
            values: labels.names().map(|_| OVERFLOW.to_string()).collect(),
            counters: Counters::default(),
            touched_ns: 0,
        };
        let mut a = Self {
            tally: Tally {
                labels,
                sets: Vec::new(),
                overflow,
                overflowed: 0,
                reasons: BTreeMap::new(),
                time_wait: BTreeMap::new(),
                stats: Stats::default(),
                generation: 0,
            },
            by_values: HashMap::new(),
            by_key: HashMap::new(),
            free: Vec::new(),
            now_ns: 0,
        };
        if a.tally.labels.is_empty() {
            // No optional labels: one set, counted without any lookup.
            a.tally.sets.push(Some(LabelSet {
                values: Vec::new(),
                counters: Counters::default(),
                touched_ns: 0,
            }));
        }
        a
    }

    #[cfg(test)]
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// A copy to publish.
    pub fn publish(&mut self) -> Tally {
        self.tally.generation += 1;
        self.tally.clone()
    }

    /// Label sets in use (overflow not counted).
    pub fn label_sets(&self) -> usize {
        self.tally.sets.iter().flatten().count()
    }

    fn values(&self, ctx: &Context, key: Key) -> (Vec<String>, bool) {
        let cgroup = key.cgroup.map(|id| ctx.cgroup(id));
        // A cgroup not named yet may be soon: its attribution is not remembered.
        let settled = !matches!(cgroup, Some(None));
        let info = cgroup.flatten();
        let values = self
            .tally
            .labels
            .0
            .iter()
            .map(|l| match l {
                Label::Netns => key.netns.map(|n| n.to_string()).unwrap_or_default(),
                Label::Unit => info.and_then(|i| i.unit.clone()).unwrap_or_default(),
                Label::Container => info
                    .and_then(|i| i.container.as_ref())
                    .map(|c| c.id[..c.id.len().min(12)].to_string())
                    .unwrap_or_default(),
                Label::Pod => info
                    .and_then(|i| i.container.as_ref())
                    .and_then(|c| c.pod_uid.clone())
                    .unwrap_or_default(),
                Label::Port => match key.port {
                    0 => String::new(),
                    p => p.to_string(),
                },
            })
            .collect();
        (values, settled)
    }

    /// The label set `key` is counted in: found, made while there is room, else overflow.
    fn set_id(&mut self, ctx: &Context, key: Key) -> usize {
        let labels = &self.tally.labels;
        if labels.is_empty() {
            return 0;
        }
        let key = Key {
            netns: key.netns.filter(|_| labels.has(Label::Netns)),
            cgroup: key.cgroup.filter(|_| {
                labels.has(Label::Unit) || labels.has(Label::Container) || labels.has(Label::Pod)
            }),
            port: if labels.has(Label::Port) { key.port } else { 0 },
        };
        if let Some(id) = self.by_key.get(&key) {
            return *id;
        }
        let (values, settled) = self.values(ctx, key);
        let id = match self.by_values.get(&values) {
            Some(id) => *id,
            None if self.label_sets() >= MAX_LABEL_SETS => OVERFLOW_ID,
            None => {
                let set = Some(LabelSet {
                    values: values.clone(),
                    counters: Counters::default(),
                    touched_ns: self.now_ns,
                });
                let id = match self.free.pop() {
                    Some(id) => {
                        self.tally.sets[id] = set;
                        id
                    }
                    None => {
                        self.tally.sets.push(set);
                        self.tally.sets.len() - 1
                    }
                };
                self.by_values.insert(values, id);
                id
            }
        };
        if settled {
            if self.by_key.len() >= KEY_CACHE {
                self.by_key.clear();
            }
            self.by_key.insert(key, id);
        }
        id
    }

    fn counters(&mut self, id: usize) -> &mut Counters {
        let set = match self.tally.sets.get_mut(id).and_then(Option::as_mut) {
            Some(set) => set,
            None => {
                self.tally.overflowed += 1;
                &mut self.tally.overflow
            }
        };
        set.touched_ns = self.now_ns;
        &mut set.counters
    }

    /// A finished connection and its diagnoses.
    pub fn conn(&mut self, ctx: &Context, c: &Conn, diagnoses: &[Diagnosis]) {
        let port = match c.role {
            Role::Server => c.lport,
            Role::Client => c.rport,
            Role::Unknown => 0,
        };
        let key = Key {
            netns: c.netns,
            cgroup: c.cgroup.map(|g| g.get()),
            port,
        };
        let id = self.set_id(ctx, key);
        let n = self.counters(id);
        let end = c.end.unwrap_or(End::Open);
        n.ends[role_slot(c.role)][end_slot(end)] += 1;
        // The handshake: its first state, timed, followed by ESTABLISHED.
        let first = c.spans().next();
        let established = c.visits.get(1).map(|v| v.state) == Some(TcpState::ESTABLISHED);
        match (c.role, first) {
            (Role::Client, Some((TcpState::SYN_SENT, Some(ns)))) if established => {
                n.connect.observe(secs(ns));
            }
            (Role::Server, Some((TcpState::SYN_RECV, Some(ns)))) if established => {
                n.handshake.observe(secs(ns));
            }
            _ => {}
        }
        if end != End::Open
            && let Some(ns) = c.duration_ns()
        {
            n.lifetime[role_slot(c.role)].observe(secs(ns));
        }
        for d in diagnoses {
            *n.diagnoses.entry((d.rule, d.severity)).or_default() += 1;
        }
    }

    /// An event: retransmits and resets are counted as they happen, not when the connection
    /// ends (a long-lived connection's trouble shows now).
    pub fn event(&mut self, ctx: &Context, ev: &Event) {
        let key = Key {
            netns: ev.netns,
            cgroup: ev.cgroup.filter(|&g| g != 0),
            port: 0,
        };
        match ev.kind {
            EventKind::Retransmit { state, kind, .. } => {
                let id = self.set_id(ctx, key);
                self.counters(id).retransmits[state_slot(state)][kind as usize] += 1;
            }
            EventKind::SynAckRetransmit { .. } => {
                let id = self.set_id(ctx, key);
                self.counters(id).retransmits[state_slot(Some(TcpState::SYN_RECV))]
                    [SegmentKind::SynAck as usize] += 1;
            }
            EventKind::RetransmitFailed { state, kind, .. } => {
                let id = self.set_id(ctx, key);
                self.counters(id).retransmit_failures[state_slot(state)][kind as usize] += 1;
            }
            EventKind::Reset {
                direction, reason, ..
            } => {
                if let Some(code) = reason
                    && !self.tally.reasons.contains_key(&code)
                    && let Some(name) = ctx.reason_name(code)
                {
                    self.tally.reasons.insert(code, name.to_string());
                }
                let id = self.set_id(ctx, key);
                let sent = direction == ResetDirection::Sent;
                *self.counters(id).resets.entry((sent, reason)).or_default() += 1;
            }
            _ => {}
        }
    }

    /// A namespace-wide finding.
    pub fn finding(&mut self, ctx: &Context, f: &NetnsFinding) {
        let key = Key {
            netns: Some(f.netns),
            ..Key::default()
        };
        let id = self.set_id(ctx, key);
        let d = &f.diagnosis;
        *self
            .counters(id)
            .findings
            .entry((d.rule, d.severity))
            .or_default() += 1;
    }

    /// A namespace sample: its TIME_WAIT sockets now. A namespace's first sample is the
    /// baseline of its counters, taken when it is first seen, without a socket dump: it says
    /// nothing about TIME_WAIT.
    pub fn sample(&mut self, s: &NetnsSample) {
        let now_ns = self.now_ns;
        match self.tally.time_wait.get_mut(&s.netns) {
            Some(t) => {
                t.sockets = Some(s.time_wait_total);
                t.sampled_ns = now_ns;
            }
            None => {
                let own = self.tally.time_wait.values().filter(|t| t.own).count();
                self.tally.time_wait.insert(
                    s.netns,
                    TimeWait {
                        sockets: None,
                        sampled_ns: now_ns,
                        own: own < MAX_NAMESPACES,
                    },
                );
            }
        }
    }

    /// The periodic tick: the pipeline's counters, and what has gone idle is dropped.
    pub fn tick(&mut self, now_ns: u64, stats: &Stats) {
        self.now_ns = now_ns;
        self.tally.stats = *stats;
        self.tally
            .time_wait
            .retain(|_, t| now_ns.saturating_sub(t.sampled_ns) < NAMESPACE_STALE_NS);
        if self.tally.labels.is_empty() {
            return;
        }
        let mut dropped = false;
        for (id, slot) in self.tally.sets.iter_mut().enumerate() {
            if slot
                .as_ref()
                .is_some_and(|s| now_ns.saturating_sub(s.touched_ns) >= IDLE_NS)
                && let Some(set) = slot.take()
            {
                self.by_values.remove(&set.values);
                self.free.push(id);
                dropped = true;
            }
        }
        if dropped {
            self.by_key.clear();
        }
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// A reset's reason label: the kernel's name, `none` when the kernel gave no reason.
pub fn reason_label(reasons: &BTreeMap<u32, String>, reason: Option<u32>) -> &str {
    match reason {
        None => "none",
        Some(code) => reasons.get(&code).map_or("unknown", String::as_str),
    }
}
