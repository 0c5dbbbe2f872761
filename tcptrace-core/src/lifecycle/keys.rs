//! How the table finds a connection: by kernel socket address within a namespace, or by
//! 4-tuple within a namespace when the socket address is unknown (sock_diag facts, request
//! sockets turning into children).
use std::net::IpAddr;

use super::conn::Conn;
use crate::event::Event;

/// A kernel socket in a namespace (namespace 0 when unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub netns: u32,
    pub sk: u64,
}

impl SockKey {
    pub fn of(ev: &Event) -> Self {
        Self {
            netns: ev.netns.unwrap_or(0),
            sk: ev.sk,
        }
    }
}

/// A 4-tuple in a namespace, as the local side sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TupleKey {
    pub netns: u32,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
}

impl TupleKey {
    pub fn of(ev: &Event) -> Self {
        Self {
            netns: ev.netns.unwrap_or(0),
            laddr: ev.laddr,
            lport: ev.lport,
            raddr: ev.raddr,
            rport: ev.rport,
        }
    }

    pub fn of_conn(c: &Conn) -> Self {
        Self {
            netns: c.netns.unwrap_or(0),
            laddr: c.laddr,
            lport: c.lport,
            raddr: c.raddr,
            rport: c.rport,
        }
    }
}

/// A listening port in a namespace (the address is left out: a wildcard listener is the
/// common case and two listeners on one port are rare).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenKey {
    pub netns: u32,
    pub port: u16,
}
