//! The connection table: consumes events in order and emits one finished [`Conn`] per
//! lifecycle. Pure: time comes from the events and from `advance(now)`.
use std::collections::VecDeque;

use tcptrace_common::TaskPlan;

use crate::FastMap as Map;

use super::{
    conn::{Conn, End, Options, Owner, Role, Visit, note},
    end::classify,
    keys::{ListenKey, SockKey, TupleKey},
};
use crate::{
    event::{Event, EventKind, ResetDirection},
    snapshot::SockSnapshot,
    tcp::{SegmentKind, TcpState},
};

/// `enum sk_rst_reason` names (without prefix) of resets sent because the owner aborted in
/// `close()`/`shutdown()`/`disconnect`: process context, so the task at CLOSE is the closer.
pub const ABORT_REASON_NAMES: [&str; 4] = [
    "TCP_ABORT_ON_CLOSE",
    "TCP_ABORT_ON_LINGER",
    "TCP_ABORT_ON_DATA",
    "TCP_STATE",
];

/// Tunables of the table.
#[derive(Clone, Debug)]
pub struct TableConfig {
    /// Most connections tracked at once (live + half-open); beyond it the least recently
    /// active are evicted, emitted with the `evicted` note and counted.
    pub max_conns: usize,
    /// How long a closed connection waits for the kernel's trailing facts (the socket error
    /// is reported after the CLOSE transition, an abort's RST too).
    pub close_grace_ns: u64,
    /// How long a connection that went to a timewait socket waits for its sock_diag fact.
    pub time_wait_wait_ns: u64,
    /// `enum sk_rst_reason` values that mean the owner aborted in `close()`/`shutdown()`
    /// (process context), so the task at the CLOSE transition is the closer.
    pub abort_reasons: Vec<u32>,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            max_conns: 262_144,
            close_grace_ns: 5_000_000,
            time_wait_wait_ns: 2_000_000_000,
            abort_reasons: Vec::new(),
        }
    }
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub finished: u64,
    pub evicted: u64,
    /// Events that named no socket the table could attach them to.
    pub unattached: u64,
    /// Transitions that did not continue from the state we had.
    pub missed: u64,
    /// Connections open when the kernel reported lost events (noted `lost_events`).
    pub open_at_loss: u64,
    pub time_wait_unconfirmed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeWait {
    NotExpected,
    Waiting,
    Known,
}

struct Closing {
    conn: Box<Conn>,
    key: SockKey,
    tw: TimeWait,
    grace_over: bool,
}

/// See the module documentation.
pub struct ConnTable {
    cfg: TableConfig,
    next_id: u64,
    live: Map<SockKey, Box<Conn>>,
    closing: Map<u64, Closing>,
    closing_by_sk: Map<SockKey, u64>,
    closing_by_tuple: Map<TupleKey, u64>,
    grace_queue: VecDeque<(u64, u64)>,
    tw_queue: VecDeque<(u64, u64)>,
    half_open: Map<SockKey, Conn>,
    half_open_by_tuple: Map<TupleKey, SockKey>,
    seeded: Map<TupleKey, Conn>,
    listeners: Map<ListenKey, Option<Owner>>,
    /// Live connections by 4-tuple, for the facts read as tracing stops.
    exit_index: Option<Map<TupleKey, SockKey>>,
    pub stats: TableStats,
}

/// Transitions an application's `close()`/`shutdown()` makes: the task then is the closer.
const CLOSE_CALLS: [(TcpState, TcpState); 3] = [
    (TcpState::ESTABLISHED, TcpState::FIN_WAIT1),
    (TcpState::SYN_RECV, TcpState::FIN_WAIT1),
    (TcpState::CLOSE_WAIT, TcpState::LAST_ACK),
];

fn is_close_call(old: TcpState, new: TcpState) -> bool {
    CLOSE_CALLS.contains(&(old, new))
}

/// The kernel records whose current task the table reads ([`Owner::of`] in `on_state`): a
/// listener's owner (→ LISTEN), the owner at `connect()` (CLOSE → SYN_SENT), the closer at a
/// close call, the task at CLOSE. With only connection records wanted, the programs leave the
/// task out of every other record.
pub fn task_plan() -> TaskPlan {
    let mut plan = TaskPlan {
        states: [0; 16],
        others: 0,
        _pad: 0,
    };
    let mut carry = |old: TcpState, new: TcpState| {
        plan.states[usize::from(new.0)] |= 1 << old.0;
    };
    carry(TcpState::CLOSE, TcpState::SYN_SENT);
    for (old, new) in CLOSE_CALLS {
        carry(old, new);
    }
    plan.states[usize::from(TcpState::LISTEN.0)] = u32::MAX;
    plan.states[usize::from(TcpState::CLOSE.0)] = u32::MAX;
    plan
}

/// Applies a state change `old` → `new` to a tracked connection; true when it closed.
fn transition(
    c: &mut Conn,
    ev: &Event,
    old: TcpState,
    new: TcpState,
    sock: Option<SockSnapshot>,
    stats: &mut TableStats,
) -> bool {
    if c.state() != Some(old) {
        c.notes |= note::MISSED_EVENTS;
        stats.missed += 1;
        c.visits.push(Visit {
            state: old,
            since_ns: None,
        });
    }
    c.update_addrs(ev);
    c.last_ns = ev.ts_ns;
    if is_close_call(old, new) && c.cold().closer.is_none() {
        c.cold_mut().closer = Some(Owner::of(ev));
    }
    if new == TcpState::ESTABLISHED
        && let Some(s) = &sock
    {
        c.options = Options::from_snapshot(s);
    }
    c.enter(new, ev.ts_ns);
    if new != TcpState::CLOSE {
        return false;
    }
    c.cold_mut().close_task = Some(Owner::of(ev));
    c.end_ns = Some(ev.ts_ns);
    if sock.is_some() {
        c.cold_mut().sock = sock;
    }
    true
}

impl ConnTable {
    pub fn new(cfg: TableConfig) -> Self {
        Self {
            cfg,
            next_id: 1,
            live: Map::default(),
            closing: Map::default(),
            closing_by_sk: Map::default(),
            closing_by_tuple: Map::default(),
            grace_queue: VecDeque::new(),
            tw_queue: VecDeque::new(),
            half_open: Map::default(),
            half_open_by_tuple: Map::default(),
            seeded: Map::default(),
            listeners: Map::default(),
            exit_index: None,
            stats: TableStats::default(),
        }
    }

    /// When the live connection of `ev`'s socket last changed state (what a re-read of its
    /// namespace's sysctls must be newer than when it ends).
    pub fn last_change_ns(&self, ev: &Event) -> Option<u64> {
        self.live.get(&SockKey::of(ev))?.visits.last()?.since_ns
    }

    pub fn config(&self) -> &TableConfig {
        &self.cfg
    }

    /// Learns a reset reason's name (from BTF, or from a recorded stream).
    pub fn learn_reason(&mut self, code: u32, name: &str) {
        if ABORT_REASON_NAMES.contains(&name) && !self.cfg.abort_reasons.contains(&code) {
            self.cfg.abort_reasons.push(code);
        }
    }

    /// Connections currently tracked (live, half-open, pre-existing, closing).
    pub fn len(&self) -> usize {
        self.live.len() + self.half_open.len() + self.seeded.len() + self.closing.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn new_conn(&mut self, ev: &Event, role: Role) -> Conn {
        let id = self.next_id;
        self.next_id += 1;
        Conn::new(id, ev, role)
    }

    /// Feeds one event; finished connections are appended to `out`.
    pub fn process(&mut self, ev: &Event, out: &mut Vec<Conn>) {
        match ev.kind {
            EventKind::State { old, new, sock } => self.on_state(ev, old, new, sock, out),
            EventKind::Retransmit { state, kind, .. } => {
                self.on_retransmit(ev, state, kind, false, out)
            }
            EventKind::RetransmitFailed { state, kind, .. } => {
                self.on_retransmit(ev, state, kind, true, out)
            }
            EventKind::SynAckRetransmit { .. } => self.on_synack(ev, out),
            EventKind::Reset {
                direction, reason, ..
            } => self.on_reset(ev, direction, reason),
            EventKind::Error { errno, .. } => self.on_error(ev, errno),
            EventKind::TimeWait { state, timer_ms } => self.on_time_wait(ev, state, timer_ms, out),
            EventKind::RequestGone => self.on_request_gone(ev, out),
            EventKind::Existing {
                state,
                at_exit,
                sock,
            } => self.on_existing(ev, state, at_exit, sock),
        }
    }

    fn on_state(
        &mut self,
        ev: &Event,
        old: TcpState,
        new: TcpState,
        sock: Option<SockSnapshot>,
        out: &mut Vec<Conn>,
    ) {
        if ev.sk == 0 {
            self.stats.unattached += 1;
            return;
        }
        let key = SockKey::of(ev);
        let listen = ListenKey {
            netns: key.netns,
            port: ev.lport,
        };
        match (old, new) {
            (_, TcpState::LISTEN) => {
                self.listeners.insert(listen, Some(Owner::of(ev)));
                self.finish_missed_close(key, ev.ts_ns, out);
                return;
            }
            (TcpState::LISTEN, TcpState::CLOSE) => {
                self.listeners.remove(&listen);
                return;
            }
            (TcpState::CLOSE, TcpState::SYN_SENT) => {
                self.finish_missed_close(key, ev.ts_ns, out);
                let mut c = self.new_conn(ev, Role::Client);
                c.start_ns = Some(ev.ts_ns);
                // connect() runs in the caller's context: this is the owner.
                c.owner = Some(Owner::of(ev));
                c.enter(TcpState::SYN_SENT, ev.ts_ns);
                self.insert_live(key, Box::new(c), out);
                return;
            }
            (TcpState::LISTEN, TcpState::SYN_RECV) => {
                self.finish_missed_close(key, ev.ts_ns, out);
                let mut c = self.new_conn(ev, Role::Server);
                c.start_ns = Some(ev.ts_ns);
                // Runs in softirq: the owner is the listener's, never the current task.
                c.owner = self.listeners.get(&listen).copied().flatten();
                c.enter(TcpState::SYN_RECV, ev.ts_ns);
                let tuple = TupleKey::of(ev);
                if let Some(req_key) = self.half_open_by_tuple.remove(&tuple)
                    && let Some(req) = self.half_open.remove(&req_key)
                {
                    if req.cold().retransmits.total > 0 {
                        c.cold_mut().retransmits.merge(&req.cold().retransmits);
                    }
                    c.owner = c.owner.or(req.owner);
                }
                self.insert_live(key, Box::new(c), out);
                return;
            }
            _ => {}
        }
        // Updated in place (one lookup when it is known); only the CLOSE transition takes it
        // out of the live table.
        let closed = match self.live.get_mut(&key) {
            Some(c) => transition(c, ev, old, new, sock, &mut self.stats),
            None => {
                let mut adopted = Box::new(self.adopt(ev, old));
                // The newest activity, so a full table evicts others, never it.
                adopted.last_ns = ev.ts_ns;
                let closed = transition(&mut adopted, ev, old, new, sock, &mut self.stats);
                self.insert_live(key, adopted, out);
                closed
            }
        };
        if closed && let Some(c) = self.live.remove(&key) {
            let expect_tw = matches!(old, TcpState::FIN_WAIT2 | TcpState::CLOSING);
            self.start_closing(key, c, expect_tw);
        }
    }

    /// The kernel lost events here (which sockets they were about, it cannot say): every
    /// connection open now may be missing one and is noted so. Those that closed since the
    /// previous check are not: a lost transition of theirs shows as a broken chain, a lost
    /// retransmit, reset or error after their last transition cannot be seen. Depends only
    /// on the events before it, so replay notes the same connections as live tracing.
    pub fn lost(&mut self) {
        let open = self
            .live
            .values_mut()
            .map(|c| &mut **c)
            .chain(self.half_open.values_mut())
            .chain(self.seeded.values_mut());
        for c in open {
            if c.notes & note::LOST_EVENTS == 0 {
                c.notes |= note::LOST_EVENTS;
                self.stats.open_at_loss += 1;
            }
        }
    }

    /// A connection we did not see start: from the sock_diag seed, or half-known.
    fn adopt(&mut self, ev: &Event, old: TcpState) -> Conn {
        if !self.seeded.is_empty()
            && let Some(mut c) = self.seeded.remove(&TupleKey::of(ev))
        {
            c.sk = ev.sk;
            return c;
        }
        let role = match old {
            TcpState::SYN_SENT => Role::Client,
            TcpState::SYN_RECV => Role::Server,
            _ => Role::Unknown,
        };
        let mut c = self.new_conn(ev, role);
        c.notes |= note::MISSED_START;
        c.visits.push(Visit {
            state: old,
            since_ns: None,
        });
        c
    }

    fn insert_live(&mut self, key: SockKey, c: Box<Conn>, out: &mut Vec<Conn>) {
        if self.live.len() + self.half_open.len() >= self.cfg.max_conns
            && !self.live.contains_key(&key)
        {
            self.evict(out);
        }
        self.live.insert(key, c);
    }

    /// Drops the least recently active sixteenth of the live connections (at least one).
    fn evict(&mut self, out: &mut Vec<Conn>) {
        let mut ages: Vec<(u64, SockKey)> =
            self.live.iter().map(|(k, c)| (c.last_ns, *k)).collect();
        let n = (ages.len() / 16).max(1).min(ages.len());
        if n == 0 {
            return;
        }
        ages.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        for (_, key) in &ages[..n] {
            if let Some(c) = self.live.remove(key) {
                self.emit_evicted(*c, out);
            }
        }
    }

    /// An evicted connection goes out as it is, noted and counted.
    fn emit_evicted(&mut self, mut c: Conn, out: &mut Vec<Conn>) {
        c.notes |= note::EVICTED;
        c.end = Some(End::Open);
        c.end_ns = Some(c.last_ns);
        self.stats.evicted += 1;
        self.stats.finished += 1;
        out.push(c);
    }

    /// A socket address reused before the old lifecycle's CLOSE was seen.
    fn finish_missed_close(&mut self, key: SockKey, ts_ns: u64, out: &mut Vec<Conn>) {
        if let Some(mut c) = self.live.remove(&key) {
            c.notes |= note::MISSED_CLOSE;
            self.stats.missed += 1;
            c.end_ns = Some(c.last_ns.min(ts_ns));
            c.end = Some(End::Open);
            self.stats.finished += 1;
            out.push(*c);
        }
    }

    fn start_closing(&mut self, key: SockKey, c: Box<Conn>, expect_tw: bool) {
        let id = c.id;
        let closed = c.end_ns.unwrap_or(c.last_ns);
        self.closing_by_sk.insert(key, id);
        if expect_tw {
            self.closing_by_tuple.insert(TupleKey::of_conn(&c), id);
        }
        self.grace_queue
            .push_back((closed.saturating_add(self.cfg.close_grace_ns), id));
        let tw = if expect_tw {
            TimeWait::Waiting
        } else {
            TimeWait::NotExpected
        };
        self.closing.insert(
            id,
            Closing {
                conn: c,
                key,
                tw,
                grace_over: false,
            },
        );
    }

    /// The connection an event about `sk` belongs to: live, or closed moments ago.
    fn target(&mut self, ev: &Event) -> Option<&mut Conn> {
        let key = SockKey::of(ev);
        if self.live.contains_key(&key) {
            return self.live.get_mut(&key).map(|c| &mut **c);
        }
        let id = *self.closing_by_sk.get(&key)?;
        self.closing.get_mut(&id).map(|c| &mut *c.conn)
    }

    fn on_retransmit(
        &mut self,
        ev: &Event,
        state: Option<TcpState>,
        kind: SegmentKind,
        failed: bool,
        out: &mut Vec<Conn>,
    ) {
        if ev.sk == 0 {
            self.stats.unattached += 1;
            return;
        }
        if self.target(ev).is_none() {
            let Some(st) = state else {
                self.stats.unattached += 1;
                return;
            };
            let c = self.adopt(ev, st);
            self.insert_live(SockKey::of(ev), Box::new(c), out);
        }
        let Some(c) = self.target(ev) else { return };
        let st = state.or(c.state()).unwrap_or(TcpState(0));
        c.last_ns = ev.ts_ns;
        if failed {
            c.cold_mut().retransmits.failed += 1;
        } else {
            c.cold_mut().retransmits.add(st, kind, ev.ts_ns);
        }
    }

    fn on_synack(&mut self, ev: &Event, out: &mut Vec<Conn>) {
        let key = SockKey::of(ev);
        if !self.half_open.contains_key(&key) {
            if self.live.len() + self.half_open.len() >= self.cfg.max_conns {
                self.evict_half_open(out);
            }
            let mut c = self.new_conn(ev, Role::Server);
            c.notes |= note::HALF_OPEN;
            c.owner = self
                .listeners
                .get(&ListenKey {
                    netns: key.netns,
                    port: ev.lport,
                })
                .copied()
                .flatten();
            c.visits.push(Visit {
                state: TcpState::SYN_RECV,
                since_ns: None,
            });
            self.half_open_by_tuple.insert(TupleKey::of(ev), key);
            self.half_open.insert(key, c);
        }
        if let Some(c) = self.half_open.get_mut(&key) {
            c.last_ns = ev.ts_ns;
            c.cold_mut()
                .retransmits
                .add(TcpState::SYN_RECV, SegmentKind::SynAck, ev.ts_ns);
        }
    }

    fn evict_half_open(&mut self, out: &mut Vec<Conn>) {
        let oldest = self
            .half_open
            .iter()
            .min_by_key(|(_, c)| c.last_ns)
            .map(|(k, _)| *k);
        match oldest {
            Some(key) => {
                if let Some(c) = self.half_open.remove(&key) {
                    self.half_open_by_tuple.remove(&TupleKey::of_conn(&c));
                    self.emit_evicted(c, out);
                }
            }
            None => self.evict(out),
        }
    }

    fn on_reset(&mut self, ev: &Event, dir: ResetDirection, reason: Option<u32>) {
        let Some(c) = (ev.sk != 0).then(|| self.target(ev)).flatten() else {
            self.stats.unattached += 1;
            return;
        };
        match dir {
            ResetDirection::Sent => {
                let k = c.cold_mut();
                k.resets_sent = k.resets_sent.saturating_add(1);
            }
            ResetDirection::Received => {
                let k = c.cold_mut();
                k.resets_received = k.resets_received.saturating_add(1);
            }
        }
        if c.cold().reset_reason.is_none() {
            c.cold_mut().reset_reason = reason;
        }
    }

    fn on_error(&mut self, ev: &Event, errno: i32) {
        let Some(c) = (ev.sk != 0).then(|| self.target(ev)).flatten() else {
            self.stats.unattached += 1;
            return;
        };
        c.cold_mut().error.get_or_insert(errno);
    }

    fn on_time_wait(
        &mut self,
        ev: &Event,
        state: Option<TcpState>,
        timer_ms: Option<u32>,
        out: &mut Vec<Conn>,
    ) {
        let Some(id) = self.closing_by_tuple.get(&TupleKey::of(ev)).copied() else {
            self.stats.unattached += 1;
            return;
        };
        let Some(cl) = self.closing.get_mut(&id) else {
            return;
        };
        cl.conn.cold_mut().time_wait = state.map(|s| (s, timer_ms));
        if state.is_none() {
            cl.conn.notes |= note::NO_TIME_WAIT;
        }
        cl.tw = TimeWait::Known;
        if cl.grace_over {
            self.finish_closing(id, out);
        }
    }

    fn on_request_gone(&mut self, ev: &Event, out: &mut Vec<Conn>) {
        let Some(mut c) = self.half_open.remove(&SockKey::of(ev)) else {
            self.stats.unattached += 1;
            return;
        };
        self.half_open_by_tuple.remove(&TupleKey::of_conn(&c));
        c.enter(TcpState::CLOSE, ev.ts_ns);
        c.end_ns = Some(ev.ts_ns);
        c.end = Some(End::Timeout);
        self.stats.finished += 1;
        out.push(c);
    }

    fn on_existing(
        &mut self,
        ev: &Event,
        state: TcpState,
        at_exit: bool,
        sock: Option<SockSnapshot>,
    ) {
        let owner = (ev.pid != 0).then(|| Owner::of(ev));
        if state == TcpState::LISTEN {
            self.listeners
                .entry(ListenKey {
                    netns: ev.netns.unwrap_or(0),
                    port: ev.lport,
                })
                .or_insert(owner);
            return;
        }
        let tuple = TupleKey::of(ev);
        if at_exit {
            let refresh = |c: &mut Conn| {
                if sock.is_some() {
                    c.cold_mut().sock = sock;
                }
            };
            if let Some(c) = self.seeded.get_mut(&tuple) {
                refresh(c);
                return;
            }
            // Built once, at the first exit fact: the live table has no tuple index.
            let live = &self.live;
            let index = self.exit_index.get_or_insert_with(|| {
                live.iter()
                    .map(|(k, c)| (TupleKey::of_conn(c), *k))
                    .collect()
            });
            if let Some(c) = index.get(&tuple).and_then(|k| self.live.get_mut(k)) {
                refresh(c);
            }
            return;
        }
        if self.seeded.contains_key(&tuple) {
            return;
        }
        let listening = self.listeners.contains_key(&ListenKey {
            netns: tuple.netns,
            port: ev.lport,
        });
        let role = if listening {
            Role::Server
        } else {
            Role::Client
        };
        let mut c = self.new_conn(ev, role);
        c.sk = 0;
        c.owner = owner;
        c.notes |= note::PREEXISTING | note::MISSED_START;
        c.visits.push(Visit {
            state,
            since_ns: None,
        });
        if let Some(s) = &sock {
            c.options = Options::from_snapshot(s);
            c.cold_mut().sock = sock;
        }
        self.seeded.insert(tuple, c);
    }

    fn finish_closing(&mut self, id: u64, out: &mut Vec<Conn>) {
        let Some(cl) = self.closing.remove(&id) else {
            return;
        };
        if self.closing_by_sk.get(&cl.key) == Some(&id) {
            self.closing_by_sk.remove(&cl.key);
        }
        let tuple = TupleKey::of_conn(&cl.conn);
        if self.closing_by_tuple.get(&tuple) == Some(&id) {
            self.closing_by_tuple.remove(&tuple);
        }
        let mut c = cl.conn;
        if cl.tw == TimeWait::Waiting {
            c.notes |= note::TIME_WAIT_UNCONFIRMED;
            self.stats.time_wait_unconfirmed += 1;
        }
        let end = classify(&c);
        if end == End::ResetSent
            && c.cold().closer.is_none()
            && c.cold()
                .reset_reason
                .is_some_and(|r| self.cfg.abort_reasons.contains(&r))
        {
            c.cold_mut().closer = c.cold().close_task;
        }
        c.end = Some(end);
        self.stats.finished += 1;
        out.push(*c);
    }

    /// Emits the closed connections whose trailing facts had time to arrive by `now_ns`.
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Conn>) {
        while let Some(&(due, id)) = self.grace_queue.front() {
            if due > now_ns {
                break;
            }
            self.grace_queue.pop_front();
            let Some(cl) = self.closing.get_mut(&id) else {
                continue;
            };
            cl.grace_over = true;
            if cl.tw == TimeWait::Waiting {
                let closed = cl.conn.end_ns.unwrap_or(due);
                self.tw_queue
                    .push_back((closed.saturating_add(self.cfg.time_wait_wait_ns), id));
            } else {
                self.finish_closing(id, out);
            }
        }
        while let Some(&(due, id)) = self.tw_queue.front() {
            if due > now_ns {
                break;
            }
            self.tw_queue.pop_front();
            self.finish_closing(id, out);
        }
    }

    /// Tracing stops: everything closed is emitted as it is, everything else as `open`.
    pub fn finish_all(&mut self, now_ns: u64, out: &mut Vec<Conn>) {
        let mut ids: Vec<u64> = self.closing.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.finish_closing(id, out);
        }
        self.grace_queue.clear();
        self.tw_queue.clear();
        let mut rest: Vec<Conn> = self.live.drain().map(|(_, c)| *c).collect();
        rest.extend(self.half_open.drain().map(|(_, c)| c));
        rest.extend(self.seeded.drain().map(|(_, c)| c));
        self.half_open_by_tuple.clear();
        rest.sort_unstable_by_key(|c| c.id);
        for mut c in rest {
            c.end = Some(End::Open);
            c.end_ns = Some(now_ns.max(c.last_ns));
            self.stats.finished += 1;
            out.push(c);
        }
    }

    /// Request sockets of half-open handshakes with no SYN-ACK retransmit since
    /// `idle_before_ns`: the runtime asks sock_diag whether they still exist.
    pub fn idle_half_open(&self, idle_before_ns: u64) -> Vec<(u32, u64, TupleKey)> {
        self.half_open
            .iter()
            .filter(|(_, c)| c.last_ns < idle_before_ns)
            .map(|(k, c)| (k.netns, k.sk, TupleKey::of_conn(c)))
            .collect()
    }
}
