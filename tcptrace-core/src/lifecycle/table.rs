//! The connection table: consumes events in order and emits one finished [`Conn`] per
//! lifecycle. Pure: time comes from the events and from `advance(now)`.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
};

use tcptrace_common::TaskPlan;

use crate::FastMap as Map;

use super::{
    conn::{Conn, End, FinWait2Watch, Options, Owner, Role, Visit, note},
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
    /// No look at the timewait socket yet.
    Waiting,
    /// Handed off in FIN_WAIT2: watched until it becomes TIME_WAIT or disappears.
    Watching,
    Known,
}

/// How long after its timer should have run out a watched FIN_WAIT2 timewait socket may still
/// be seen before its record goes out unresolved: the timer wheel fires a timer late by up to
/// one granule of its level (about 1/8 of the timeout), plus the looks' own spacing.
fn fin_wait2_deadline(w: &FinWait2Watch) -> u64 {
    let timer_ns = u64::from(w.timer_ms.unwrap_or(crate::budget::TIME_WAIT_MS as u32)) * 1_000_000;
    w.first_ns + timer_ns + timer_ns / 7 + 2_000_000_000
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
    /// Watched FIN_WAIT2 hand-offs by the time their record goes out unresolved.
    fin_wait2_queue: BinaryHeap<Reverse<(u64, u64)>>,
    /// The ids of the closing connections being watched in FIN_WAIT2.
    watching: Map<u64, ()>,
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
            fin_wait2_queue: BinaryHeap::new(),
            watching: Map::default(),
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
                direction,
                reason,
                state,
            } => self.on_reset(ev, direction, reason, state),
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
                // Runs in softirq: the owner is the listener's, never the current task.
                c.owner = self.listeners.get(&listen).copied().flatten();
                let tuple = TupleKey::of(ev);
                let mut since = ev.ts_ns;
                if let Some(req_key) = self.half_open_by_tuple.remove(&tuple)
                    && let Some(req) = self.half_open.remove(&req_key)
                {
                    if req.cold().retransmits.total > 0 {
                        c.cold_mut().retransmits.merge(&req.cold().retransmits);
                    }
                    c.owner = c.owner.or(req.owner);
                    // The handshake began with the request socket, SYN-ACK retransmits ago.
                    since = req.start_ns.map_or(since, |s| s.min(since));
                }
                c.start_ns = Some(since);
                c.enter(TcpState::SYN_RECV, since);
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
            // The request socket sent its first SYN-ACK one initial timeout (TCP_TIMEOUT_INIT)
            // before this first retransmit: that is when the handshake began (the timer may
            // have fired up to a timer-wheel granule late, 36 ms at HZ=250).
            let start = ev.ts_ns.saturating_sub(SYNACK_TIMEOUT_INIT_NS);
            c.start_ns = Some(start);
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
                since_ns: Some(start),
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

    fn on_reset(
        &mut self,
        ev: &Event,
        dir: ResetDirection,
        reason: Option<u32>,
        state: Option<TcpState>,
    ) {
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
        // Kernels before 6.10 give no reason (see `layout::Quirks`). An RST the socket sent
        // after it was already in CLOSE comes from `tcp_disconnect()` or `close()` with unread
        // data or SO_LINGER 0, which close first and reset second, in the calling process: the
        // task at the CLOSE transition closed it, as the abort reasons say on later kernels.
        // (RSTs from timers or softirq are sent before the socket closes, or after a close
        // call already named the closer.)
        if dir == ResetDirection::Sent
            && reason.is_none()
            && state == Some(TcpState::CLOSE)
            && c.cold().closer.is_none()
            && let Some(task) = c.cold().close_task.filter(|t| t.pid != 0)
        {
            c.cold_mut().closer = Some(task);
        }
    }

    fn on_error(&mut self, ev: &Event, errno: i32) {
        // tcp_disconnect() (a failed connect() ends in it) reports the socket's error once
        // more after connect() already read it: errno 0, no error (6.1 does; see event.rs).
        if ev.kind.is_empty_error_report() {
            return;
        }
        let Some(c) = (ev.sk != 0).then(|| self.target(ev)).flatten() else {
            self.stats.unattached += 1;
            return;
        };
        c.cold_mut().error.get_or_insert(errno);
    }

    /// A look at the timewait socket of a connection that closed from FIN_WAIT2/CLOSING: the
    /// first settles it unless it shows FIN_WAIT2, which is then watched by further looks.
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
        let cold = cl.conn.cold_mut();
        match (cl.tw, state) {
            (TimeWait::Watching, Some(TcpState::FIN_WAIT2)) => {
                if let Some(w) = cold.fin_wait2.as_mut() {
                    w.last_seen_ns = ev.ts_ns;
                }
                return;
            }
            (TimeWait::Watching, None) => {
                // Gone: its timer expired, or a reset (or a reused port) ended it early.
                if let Some(w) = cold.fin_wait2.as_mut() {
                    w.gone_ns = Some(ev.ts_ns);
                }
                cl.tw = TimeWait::Known;
            }
            (TimeWait::Watching, Some(s)) => {
                // The peer's FIN reached the timewait socket: an orderly close after all.
                cold.time_wait = Some((s, timer_ms));
                cl.tw = TimeWait::Known;
            }
            (TimeWait::Known | TimeWait::NotExpected, _) => return,
            (TimeWait::Waiting, Some(TcpState::FIN_WAIT2)) => {
                cold.time_wait = Some((TcpState::FIN_WAIT2, timer_ms));
                let w = FinWait2Watch {
                    first_ns: ev.ts_ns,
                    timer_ms,
                    last_seen_ns: ev.ts_ns,
                    gone_ns: None,
                };
                cold.fin_wait2 = Some(w);
                cl.tw = TimeWait::Watching;
                self.watching.insert(id, ());
                self.fin_wait2_queue
                    .push(Reverse((fin_wait2_deadline(&w), id)));
                return;
            }
            (TimeWait::Waiting, _) => {
                cold.time_wait = state.map(|s| (s, timer_ms));
                if state.is_none() {
                    cl.conn.notes |= note::NO_TIME_WAIT;
                }
                cl.tw = TimeWait::Known;
            }
        }
        if cl.grace_over {
            self.finish_closing(id, out);
        }
    }

    /// Connections handed off in FIN_WAIT2 whose timewait socket is still being watched: the
    /// runtime looks at each again (see [`FinWait2Watch`]).
    pub fn fin_wait2_watches(&self) -> impl Iterator<Item = (TupleKey, FinWait2Watch)> + '_ {
        self.watching
            .keys()
            .filter_map(|id| self.closing.get(id))
            .filter(|cl| cl.tw == TimeWait::Watching)
            .filter_map(|cl| Some((TupleKey::of_conn(&cl.conn), cl.conn.cold().fin_wait2?)))
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
        self.watching.remove(&id);
        if self.closing_by_sk.get(&cl.key) == Some(&id) {
            self.closing_by_sk.remove(&cl.key);
        }
        let tuple = TupleKey::of_conn(&cl.conn);
        if self.closing_by_tuple.get(&tuple) == Some(&id) {
            self.closing_by_tuple.remove(&tuple);
        }
        let mut c = cl.conn;
        if matches!(cl.tw, TimeWait::Waiting | TimeWait::Watching) {
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
            match cl.tw {
                TimeWait::Waiting => {
                    let closed = cl.conn.end_ns.unwrap_or(due);
                    self.tw_queue
                        .push_back((closed.saturating_add(self.cfg.time_wait_wait_ns), id));
                }
                // Its own deadline (or the look that settles it) lets it out.
                TimeWait::Watching => {}
                _ => self.finish_closing(id, out),
            }
        }
        while let Some(&(due, id)) = self.tw_queue.front() {
            if due > now_ns {
                break;
            }
            self.tw_queue.pop_front();
            if self
                .closing
                .get(&id)
                .is_some_and(|cl| cl.tw != TimeWait::Watching)
            {
                self.finish_closing(id, out);
            }
        }
        while let Some(&Reverse((due, id))) = self.fin_wait2_queue.peek() {
            if due > now_ns {
                break;
            }
            self.fin_wait2_queue.pop();
            if self
                .closing
                .get(&id)
                .is_some_and(|cl| cl.tw == TimeWait::Watching && cl.grace_over)
            {
                self.finish_closing(id, out);
            }
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
        self.fin_wait2_queue.clear();
        self.watching.clear();
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

    /// Request sockets of half-open handshakes, with when their last SYN-ACK went out and how
    /// many were retransmitted: the runtime asks sock_diag whether each still exists once its
    /// timer should have dropped it.
    pub fn half_open_requests(&self) -> impl Iterator<Item = HalfOpenRequest> + '_ {
        self.half_open.iter().map(|(k, c)| HalfOpenRequest {
            netns: k.netns,
            sk: k.sk,
            tuple: TupleKey::of_conn(c),
            last_synack_ns: c.cold().retransmits.last_ns.unwrap_or(c.last_ns),
            synacks: c.cold().retransmits.total,
        })
    }
}

/// The first SYN-ACK's timeout (`TCP_TIMEOUT_INIT`).
const SYNACK_TIMEOUT_INIT_NS: u64 = crate::budget::TIMEOUT_INIT_MS * 1_000_000;

/// A half-open handshake's request socket, as [`ConnTable::half_open_requests`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfOpenRequest {
    pub netns: u32,
    pub sk: u64,
    pub tuple: TupleKey,
    pub last_synack_ns: u64,
    /// SYN-ACK retransmits so far.
    pub synacks: u32,
}

impl HalfOpenRequest {
    /// When the request timer that follows the last retransmit runs out (`reqsk_timer_handler`
    /// re-arms it at `TCP_TIMEOUT_INIT << num_timeout`, capped at `rto_max_ms`): the request is
    /// dropped then if the retries are spent, else it retransmits again.
    pub fn next_timer_ns(&self, rto_max_ms: u64) -> u64 {
        let ms = (crate::budget::TIMEOUT_INIT_MS << self.synacks.min(20)).min(rto_max_ms);
        self.last_synack_ns + ms * 1_000_000
    }
}
