//! Time spent in the previous state: remembers each socket's last transition so a state event
//! can say how long the socket sat in its old state (`prev_ms`).

use crate::{event::Event, event::EventKind, tcp::TcpState};

/// Last transition time per socket, bounded in size.
#[derive(Debug)]
pub struct StateClock {
    last: crate::FastMap<u64, u64>,
    capacity: usize,
}

impl StateClock {
    /// A clock remembering at most `capacity` sockets (older entries are dropped wholesale when
    /// full, which only costs `prev_ms` of their next transition).
    pub fn new(capacity: usize) -> Self {
        Self {
            last: crate::FastMap::default(),
            capacity: capacity.max(1),
        }
    }

    /// Returns nanoseconds spent in the old state for a state event and records the transition.
    /// `None` for non-state events and for the first transition seen of a socket.
    pub fn observe(&mut self, ev: &Event) -> Option<u64> {
        let EventKind::State { new, .. } = ev.kind else {
            return None;
        };
        if ev.sk == 0 {
            return None;
        }
        let prev = if new == TcpState::CLOSE {
            self.last.remove(&ev.sk)
        } else {
            if self.last.len() >= self.capacity && !self.last.contains_key(&ev.sk) {
                self.last.clear();
            }
            self.last.insert(ev.sk, ev.ts_ns)
        };
        prev.map(|t| ev.ts_ns.saturating_sub(t))
    }

    /// When socket `sk` last changed state, if remembered.
    pub fn last(&self, sk: u64) -> Option<u64> {
        self.last.get(&sk).copied()
    }

    /// Number of sockets currently remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Comm, Family};

    fn state(sk: u64, ts: u64, old: TcpState, new: TcpState) -> Event {
        Event {
            ts_ns: ts,
            sk,
            netns: None,
            cgroup: None,
            pid: 1,
            tid: 1,
            comm: Comm::new("t"),
            family: Family::Inet,
            laddr: Event::unspecified(Family::Inet),
            lport: 1,
            raddr: Event::unspecified(Family::Inet),
            rport: 2,
            kind: EventKind::State {
                old,
                new,
                sock: None,
            },
        }
    }

    #[test]
    fn measures_time_in_previous_state_and_forgets_closed_sockets() {
        let mut c = StateClock::new(16);
        assert_eq!(
            c.observe(&state(1, 100, TcpState::CLOSE, TcpState::SYN_SENT)),
            None
        );
        assert_eq!(
            c.observe(&state(1, 1_100, TcpState::SYN_SENT, TcpState::ESTABLISHED)),
            Some(1_000)
        );
        assert_eq!(
            c.observe(&state(1, 5_100, TcpState::ESTABLISHED, TcpState::CLOSE)),
            Some(4_000)
        );
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_bounds_memory() {
        let mut c = StateClock::new(2);
        for sk in 1..=5 {
            c.observe(&state(sk, sk, TcpState::CLOSE, TcpState::SYN_SENT));
            assert!(c.len() <= 2);
        }
    }
}
