//! Connection records summed up by destination, process and unit/container, in bounded
//! memory: per group, connections by how they ended, retransmits, and connect time and
//! duration in [`Histogram`]s (percentiles within 1.6 %). Each grouping keeps at most
//! [`MAX_GROUPS`] groups; records of any further group are summed in one `other` row. Pure:
//! the summary sink decides the periods and prints, the wire writes `summary` lines.
pub mod histogram;

use std::net::IpAddr;

pub use histogram::Histogram;

use crate::{
    context::Context,
    lifecycle::{Conn, End, Role},
    tcp::TcpState,
};

/// Groups kept per grouping and period.
pub const MAX_GROUPS: usize = 32;

/// What a row sums up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum By {
    /// Every connection of the period.
    All,
    /// A client's remote address and port; a server's local (listening) port.
    Destination,
    /// The owner's command name.
    Process,
    /// The container, else the systemd unit, else the cgroup path.
    Unit,
}

impl By {
    pub const GROUPED: [Self; 3] = [Self::Destination, Self::Process, Self::Unit];

    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Destination => "destination",
            Self::Process => "process",
            Self::Unit => "unit",
        }
    }
}

/// A group: its name (`None` when unknown: no owner, no cgroup) and, for destinations, the
/// side of the connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub role: Option<&'static str>,
    pub name: Option<String>,
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    }
}

impl Key {
    /// The group `c` falls in when summed up `by`.
    pub fn of(by: By, ctx: &Context, c: &Conn) -> Self {
        match by {
            By::All => Self {
                role: None,
                name: None,
            },
            By::Destination => Self {
                role: Some(c.role.name()),
                name: Some(match c.role {
                    Role::Server => format!(":{}", c.lport),
                    _ => endpoint(c.raddr, c.rport),
                }),
            },
            By::Process => Self {
                role: None,
                name: c
                    .owner
                    .map(|o| String::from_utf8_lossy(o.comm.bytes()).into_owned()),
            },
            By::Unit => Self {
                role: None,
                name: c.cgroup.map(|id| match ctx.cgroup(id.get()) {
                    Some(info) => info.short().unwrap_or_else(|| "/".to_string()),
                    None => format!("cgroup {}", id.get()),
                }),
            },
        }
    }
}

/// The sums of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub conns: u64,
    /// By [`End::ALL`] order.
    pub ends: [u64; End::ALL.len()],
    pub retransmits: u64,
    /// SYN_SENT to ESTABLISHED of clients whose handshake completed.
    pub connect: Histogram,
    /// Whole lifetimes of connections that ended (not `open`) with a known start.
    pub duration: Histogram,
}

impl Row {
    pub fn add(&mut self, c: &Conn) {
        self.conns += 1;
        let end = c.end.unwrap_or(End::Open);
        if let Some(i) = End::ALL.iter().position(|e| *e == end) {
            self.ends[i] += 1;
        }
        self.retransmits += u64::from(c.cold().retransmits.total);
        if let Some(ns) = connect_ns(c) {
            self.connect.record(ns);
        }
        if end != End::Open
            && let Some(ns) = c.duration_ns()
        {
            self.duration.record(ns);
        }
    }

    pub fn merge(&mut self, o: &Row) {
        self.conns += o.conns;
        for (a, b) in self.ends.iter_mut().zip(o.ends) {
            *a += b;
        }
        self.retransmits += o.retransmits;
        self.connect.merge(&o.connect);
        self.duration.merge(&o.duration);
    }

    /// Connections that ended in failure (see [`End::failed`]).
    pub fn failed(&self) -> u64 {
        End::ALL
            .iter()
            .zip(self.ends)
            .filter(|(e, _)| e.failed())
            .map(|(_, n)| n)
            .sum()
    }

    /// `(end, count)` for every end that occurred, in [`End::ALL`] order.
    pub fn ends(&self) -> impl Iterator<Item = (End, u64)> + '_ {
        End::ALL.into_iter().zip(self.ends).filter(|(_, n)| *n > 0)
    }
}

/// How long a client's connect took: its SYN_SENT span, when the handshake completed.
fn connect_ns(c: &Conn) -> Option<u64> {
    if c.role != Role::Client || !c.visited(TcpState::ESTABLISHED) {
        return None;
    }
    c.spans()
        .find(|(s, _)| *s == TcpState::SYN_SENT)
        .and_then(|(_, ns)| ns)
}

/// One grouping: up to [`MAX_GROUPS`] rows in order of first sight, then `other`.
#[derive(Clone, Debug, Default)]
pub struct Grouping {
    rows: Vec<(Key, Row)>,
    other: Option<Row>,
}

impl Grouping {
    fn add(&mut self, key: Key, c: &Conn) {
        if let Some((_, row)) = self.rows.iter_mut().find(|(k, _)| *k == key) {
            row.add(c);
        } else if self.rows.len() < MAX_GROUPS {
            let mut row = Row::default();
            row.add(c);
            self.rows.push((key, row));
        } else {
            self.other.get_or_insert_default().add(c);
        }
    }

    /// The rows, most connections first (ties in order of first sight).
    pub fn rows(&self) -> Vec<(&Key, &Row)> {
        let mut rows: Vec<(&Key, &Row)> = self.rows.iter().map(|(k, r)| (k, r)).collect();
        rows.sort_by_key(|(_, r)| std::cmp::Reverse(r.conns));
        rows
    }

    /// What groups beyond the cap added up to.
    pub fn other(&self) -> Option<&Row> {
        self.other.as_ref()
    }
}

/// The records of one period (or of the whole run), summed every way.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub all: Row,
    pub destination: Grouping,
    pub process: Grouping,
    pub unit: Grouping,
}

impl Summary {
    pub fn add(&mut self, ctx: &Context, c: &Conn) {
        self.all.add(c);
        for by in By::GROUPED {
            let key = Key::of(by, ctx, c);
            self.grouping_mut(by).add(key, c);
        }
    }

    pub fn grouping(&self, by: By) -> &Grouping {
        match by {
            By::Destination | By::All => &self.destination,
            By::Process => &self.process,
            By::Unit => &self.unit,
        }
    }

    fn grouping_mut(&mut self, by: By) -> &mut Grouping {
        match by {
            By::Destination | By::All => &mut self.destination,
            By::Process => &mut self.process,
            By::Unit => &mut self.unit,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.all.conns == 0
    }
}

#[cfg(test)]
mod tests;
