//! Rules on normal traffic must stay silent (or explain it as normal): synthetic streams
//! shaped like what the kernel reports for an orderly close whose peer answers a few
//! milliseconds late, a loopback handshake, and the real FIN_WAIT2 timeout beside them.
use super::*;
use crate::{
    event::{Comm, Event, EventKind, Family},
    lifecycle::{ConnTable, End, TableConfig},
    snapshot::{Field, SockSnapshot},
    sysctl::{self as sc, Sysctls},
    tcp::TcpState,
};

const MS: u64 = 1_000_000;

/// Events of one client socket 10.0.0.2:40000 → 10.0.0.1:9527 in namespace 7.
struct Stream {
    evs: Vec<Event>,
    laddr: std::net::IpAddr,
    raddr: std::net::IpAddr,
}

impl Stream {
    fn v4() -> Self {
        Self {
            evs: Vec::new(),
            laddr: "10.0.0.2".parse().unwrap(),
            raddr: "10.0.0.1".parse().unwrap(),
        }
    }

    fn loopback() -> Self {
        Self {
            evs: Vec::new(),
            laddr: "127.0.0.1".parse().unwrap(),
            raddr: "127.0.0.1".parse().unwrap(),
        }
    }

    fn push(&mut self, ts_ms: f64, kind: EventKind) -> &mut Self {
        self.evs.push(Event {
            ts_ns: (ts_ms * MS as f64) as u64,
            sk: 0xffff_8880_0000_1000,
            netns: Some(7),
            cgroup: None,
            pid: 42,
            tid: 42,
            comm: Comm::new("client"),
            family: Family::Inet,
            laddr: self.laddr,
            lport: 40000,
            raddr: self.raddr,
            rport: 9527,
            kind,
        });
        self
    }

    fn state(&mut self, ts_ms: f64, old: TcpState, new: TcpState) -> &mut Self {
        let sock = match new {
            TcpState::ESTABLISHED => {
                let mut s = SockSnapshot::default();
                s.set(Field::MssClamp, 65_495);
                s.set(Field::Sack, 1);
                s.set(Field::Timestamps, 1);
                s.set(Field::WscaleOk, 1);
                s.set(Field::SndWscale, 7);
                s.set(Field::RcvWscale, 7);
                Some(s)
            }
            TcpState::CLOSE => {
                let mut s = SockSnapshot::default();
                s.set(Field::SrttUs, 60);
                s.set(Field::BytesAcked, 2);
                s.set(Field::BytesReceived, 1);
                s.set(Field::Orphan, 1);
                Some(s)
            }
            _ => None,
        };
        self.push(ts_ms, EventKind::State { old, new, sock })
    }

    fn look(&mut self, ts_ms: f64, state: Option<TcpState>, timer_ms: Option<u32>) -> &mut Self {
        self.push(ts_ms, EventKind::TimeWait { state, timer_ms })
    }

    /// Connect, close first at 100 ms: handed to a timewait socket in FIN_WAIT2 at 100.2 ms,
    /// first looked at 1 ms later.
    fn closed_first(&mut self, fin_timeout_ms: u32) -> &mut Self {
        self.state(0.0, TcpState::CLOSE, TcpState::SYN_SENT)
            .state(0.1, TcpState::SYN_SENT, TcpState::ESTABLISHED)
            .state(100.0, TcpState::ESTABLISHED, TcpState::FIN_WAIT1)
            .state(100.1, TcpState::FIN_WAIT1, TcpState::FIN_WAIT2)
            .state(100.2, TcpState::FIN_WAIT2, TcpState::CLOSE)
            .look(101.2, Some(TcpState::FIN_WAIT2), Some(fin_timeout_ms - 1))
    }

    /// Every record of the stream, as the table emits them.
    fn records(&self) -> Vec<Conn> {
        let mut t = ConnTable::new(TableConfig::default());
        let mut out = Vec::new();
        for e in &self.evs {
            t.advance(e.ts_ns, &mut out);
            t.process(e, &mut out);
        }
        let end = self.evs.last().map_or(0, |e| e.ts_ns);
        // Long enough for any deadline of the table.
        t.advance(end + 200_000 * MS, &mut out);
        t.finish_all(end + 200_000 * MS, &mut out);
        out
    }
}

fn sysctls(fin_timeout: &str) -> Sysctls {
    Sysctls::from_read(
        [
            (sc::FIN_TIMEOUT, fin_timeout),
            (sc::SACK, "1"),
            (sc::TIMESTAMPS, "1"),
            (sc::WINDOW_SCALING, "1"),
        ],
        Some(250),
    )
}

fn judged(c: &Conn, sys: &Sysctls, mtu: Option<u32>) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    let inp = Inputs {
        sys,
        reset_reason: None,
        mtu,
    };
    diagnose(c, &inp, Severity::Info, &mut out);
    out
}

/// The rules that fired, but the handshake's (every established connection has one).
fn rules_of(d: &[Diagnosis]) -> Vec<&'static str> {
    d.iter()
        .map(|d| d.rule)
        .filter(|r| *r != "handshake")
        .collect()
}

#[test]
fn orderly_close_whose_peer_fin_comes_late_is_time_wait_not_fin_wait2() {
    // The server closes 40 ms after our FIN: the first look still sees FIN_WAIT2, the next
    // one TIME_WAIT (its timer restarted at 60 s when the FIN arrived).
    let mut s = Stream::v4();
    s.closed_first(60_000)
        .look(1101.2, Some(TcpState::TIME_WAIT), Some(59_000));
    let recs = s.records();
    assert_eq!(recs.len(), 1);
    let c = &recs[0];
    assert_eq!(c.end, Some(End::Closed));
    assert_eq!(
        c.cold().time_wait,
        Some((TcpState::TIME_WAIT, Some(59_000)))
    );
    assert_eq!(c.notes, 0, "{:?}", c.note_names().collect::<Vec<_>>());
    // The peer's FIN reached the timewait socket, not the full one: not in bytes_received.
    assert_eq!(c.bytes_received(), Some(1));
    let d = judged(c, &sysctls("60"), None);
    assert_eq!(rules_of(&d), ["time_wait"], "{d:#?}");
    assert!(d.iter().all(|d| d.agrees != Some(false)), "{d:#?}");
}

#[test]
fn a_hand_off_in_fin_wait2_alone_is_no_finding() {
    // Only the first look (an old recording, or tracing stopped): nothing is claimed.
    let mut s = Stream::v4();
    s.closed_first(60_000);
    let recs = s.records();
    let d = judged(&recs[0], &sysctls("60"), None);
    assert!(!rules_of(&d).contains(&"fin_wait2_timeout"), "{d:#?}");
    // Gone long before its timer: a reset or a reused port ended it, not the timeout.
    let mut s = Stream::v4();
    s.closed_first(60_000).look(2000.0, None, None);
    let d = judged(&s.records()[0], &sysctls("60"), None);
    assert!(!rules_of(&d).contains(&"fin_wait2_timeout"), "{d:#?}");
}

#[test]
fn fin_wait2_timeout_rests_on_the_socket_going_when_its_timer_ran_out() {
    // tcp_fin_timeout=3: looks at +1, +2, +3 s still see FIN_WAIT2; at +3.2 s it is gone (a
    // 3 s timer is 750 jiffies at HZ=250, level 2: up to 260 ms late).
    let mut s = Stream::v4();
    s.closed_first(3000)
        .look(1101.2, Some(TcpState::FIN_WAIT2), Some(1999))
        .look(2101.2, Some(TcpState::FIN_WAIT2), Some(999))
        .look(3110.0, Some(TcpState::FIN_WAIT2), Some(0))
        .look(3210.0, None, None);
    let recs = s.records();
    let c = &recs[0];
    assert_eq!(c.cold().time_wait.map(|t| t.0), Some(TcpState::FIN_WAIT2));
    let d = judged(c, &sysctls("3"), None);
    assert_eq!(rules_of(&d), ["fin_wait2_timeout"], "{d:#?}");
    let d = &d[0];
    assert_eq!(d.agrees, Some(true), "{}", d.message);
    assert!(
        d.observed.contains(&("gone_by_ms", 3109u64.into())),
        "{d:?}"
    );
    assert!(d.expected.contains(&("held_ms", 3000u64.into())));
    // Still seen two seconds after its expiry: the kernel did not do what the sysctl says.
    let mut s = Stream::v4();
    s.closed_first(3000)
        .look(5200.0, Some(TcpState::FIN_WAIT2), Some(0))
        .look(5300.0, None, None);
    let d = judged(&s.records()[0], &sysctls("3"), None);
    let d = d.iter().find(|d| d.rule == "fin_wait2_timeout").unwrap();
    assert_eq!(d.agrees, Some(false), "{}", d.message);
}

#[test]
fn loopback_mss_is_what_a_65535_byte_packet_carries() {
    let mut s = Stream::loopback();
    s.state(0.0, TcpState::CLOSE, TcpState::SYN_SENT)
        .state(0.1, TcpState::SYN_SENT, TcpState::ESTABLISHED)
        .state(10.0, TcpState::ESTABLISHED, TcpState::FIN_WAIT1)
        .state(10.1, TcpState::FIN_WAIT1, TcpState::FIN_WAIT2)
        .state(10.1, TcpState::FIN_WAIT2, TcpState::CLOSE)
        .look(11.0, Some(TcpState::TIME_WAIT), Some(59_999));
    let recs = s.records();
    let d = judged(&recs[0], &sysctls("60"), Some(65_536));
    let hs = d.iter().find(|d| d.rule == "handshake").expect("handshake");
    assert_eq!(hs.agrees, Some(true), "{}", hs.message);
    assert!(hs.expected.contains(&("mss", 65_495u32.into())), "{hs:?}");
    assert!(!hs.message.contains("less than"), "{}", hs.message);
}

#[test]
fn no_rtt_sample_is_no_rtt() {
    // A refused connect: the kernel's srtt_us is 0 (never measured), which is not 0 ms.
    let mut s = Stream::v4();
    s.state(0.0, TcpState::CLOSE, TcpState::SYN_SENT);
    let mut close = SockSnapshot::default();
    close.set(Field::SrttUs, 0);
    s.push(
        0.2,
        EventKind::State {
            old: TcpState::SYN_SENT,
            new: TcpState::CLOSE,
            sock: Some(close),
        },
    )
    .push(
        0.2,
        EventKind::Error {
            errno: 111,
            state: Some(TcpState::CLOSE),
        },
    );
    let recs = s.records();
    assert_eq!(recs[0].end, Some(End::Refused));
    assert_eq!(recs[0].srtt_us(), None);
}
