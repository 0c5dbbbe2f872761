//! One NETLINK_SOCK_DIAG socket bound to a network namespace: inet_diag requests encoded and
//! answers decoded with netlink-packet-sock-diag.
use std::{io, net::IpAddr, path::Path};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::{DiagSock, TcpInfo, Tuple, netns::in_netns};

/// Netlink header plus the offset of `idiag_expires` in `struct inet_diag_msg`: the crate
/// keeps no remaining time for TIME_WAIT timers, so it is read from the raw message.
const EXPIRES_AT: usize = 16 + 4 + 48;

/// See the module documentation.
pub struct NetnsDiag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn new_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// `struct tcp_info` (uapi/linux/tcp.h): the stable prefix we read.
fn tcp_info(raw: &[u8]) -> Option<TcpInfo> {
    let u32_at = |o: usize| Some(u32::from_ne_bytes(raw.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_ne_bytes(raw.get(o..o + 8)?.try_into().ok()?));
    let options = *raw.get(5)?;
    let wscale = *raw.get(6)?;
    Some(TcpInfo {
        snd_mss: u32_at(16)?,
        rtt_us: u32_at(68)?,
        advmss: u32_at(84)?,
        total_retrans: u32_at(100)?,
        bytes_acked: u64_at(120).unwrap_or(0),
        bytes_received: u64_at(128).unwrap_or(0),
        snd_wscale: wscale & 0x0f,
        rcv_wscale: wscale >> 4,
        timestamps: options & 1 != 0,
        sack: options & 2 != 0,
        wscale: options & 4 != 0,
    })
}

/// `SOCK_DESTROY` (`linux/sock_diag.h`): the message type that closes the socket a request
/// names (needs `CONFIG_INET_DIAG_DESTROY`); the crate does not name it.
const SOCK_DESTROY: u16 = 21;

/// `INET_DIAG_CGROUP_ID`: the attribute the crate does not name.
const INET_DIAG_CGROUP_ID: u16 = 21;

fn convert(r: &InetResponse, expires: u32) -> DiagSock {
    let h = &r.header;
    let id = &h.socket_id;
    let info = r.nlas.iter().find_map(|n| match n {
        Nla::TcpInfo(raw) => tcp_info(raw),
        _ => None,
    });
    let cgroup = r.nlas.iter().find_map(|n| match n {
        Nla::Other(a) if a.kind() == INET_DIAG_CGROUP_ID && a.value_len() == 8 => {
            let mut v = [0u8; 8];
            a.emit_value(&mut v);
            Some(u64::from_ne_bytes(v))
        }
        _ => None,
    });
    let timer = match h.timer {
        Some(netlink_packet_sock_diag::inet::Timer::Retransmit(..)) => 1,
        Some(netlink_packet_sock_diag::inet::Timer::KeepAlive(_)) => 2,
        Some(netlink_packet_sock_diag::inet::Timer::TimeWait) => 3,
        Some(netlink_packet_sock_diag::inet::Timer::Probe(_)) => 4,
        None => 0,
    };
    DiagSock {
        tuple: Tuple {
            laddr: id.source_address,
            lport: id.source_port,
            raddr: id.destination_address,
            rport: id.destination_port,
        },
        state: h.state,
        timer_ms: (timer != 0).then_some(expires),
        timer,
        inode: h.inode,
        uid: h.uid,
        rqueue: h.recv_queue,
        wqueue: h.send_queue,
        cookie: u64::from_ne_bytes(id.cookie),
        cgroup,
        mini: info.is_none(),
        info,
    }
}

/// A request naming one socket by 4-tuple (and `cookie`, all ones for "any").
fn exact(ipv6: bool, t: &Tuple, cookie: [u8; 8]) -> InetRequest {
    let v6 = |a: IpAddr| match a {
        IpAddr::V4(v4) if ipv6 => IpAddr::V6(v4.to_ipv6_mapped()),
        a => a,
    };
    InetRequest {
        family: if ipv6 { AF_INET6 } else { AF_INET },
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::INFO,
        states: StateFlags::all(),
        socket_id: SocketId {
            source_port: t.lport,
            destination_port: t.rport,
            source_address: v6(t.laddr),
            destination_address: v6(t.raddr),
            interface_id: 0,
            cookie,
        },
    }
}

impl NetnsDiag {
    /// A socket in the caller's own network namespace.
    pub fn current() -> io::Result<Self> {
        Ok(Self::with(new_socket()?))
    }

    /// A socket inside the namespace whose nsfs file is `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self::with(in_netns(path, new_socket)?))
    }

    fn with(socket: Socket) -> Self {
        Self {
            socket,
            seq: 0,
            buf: vec![0; 1 << 16],
        }
    }

    fn send(&mut self, flags: u16, req: InetRequest) -> io::Result<u32> {
        self.send_as(None, flags, req)
    }

    /// Sends `req`, as another message type than a sock_diag request when `kind` says so.
    fn send_as(&mut self, kind: Option<u16>, flags: u16, req: InetRequest) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = flags;
        hdr.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(hdr, SockDiagMessage::InetRequest(req).into());
        msg.finalize();
        if let Some(k) = kind {
            msg.header.message_type = k;
        }
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0)?;
        Ok(self.seq)
    }

    /// Reads answers to request `seq` until it is complete, handing each socket to `each`;
    /// `Ok(false)` on ENOENT.
    fn receive(
        &mut self,
        seq: u32,
        dump: bool,
        each: &mut dyn FnMut(DiagSock),
    ) -> io::Result<bool> {
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at + 16 <= n {
                let bytes = &self.buf[at..n];
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::other(format!("sock_diag answer: {e}")))?;
                let len = msg.header.length as usize;
                if len < 16 {
                    return Err(io::Error::other("sock_diag answer: zero-length message"));
                }
                if msg.header.sequence_number == seq {
                    match msg.payload {
                        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                            let expires = bytes
                                .get(EXPIRES_AT..EXPIRES_AT + 4)
                                .and_then(|b| b.try_into().ok())
                                .map_or(0, u32::from_ne_bytes);
                            each(convert(&r, expires));
                            if !dump {
                                return Ok(true);
                            }
                        }
                        NetlinkPayload::Done(_) => return Ok(true),
                        NetlinkPayload::Error(e) => {
                            return match e.raw_code() {
                                0 => Ok(true),
                                c if -c == libc::ENOENT => Ok(false),
                                _ => Err(e.to_io()),
                            };
                        }
                        _ => {}
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    /// Exact lookup of one socket (full, timewait or request) by 4-tuple.
    pub fn lookup(&mut self, ipv6: bool, t: &Tuple) -> io::Result<Option<DiagSock>> {
        let seq = self.send(NLM_F_REQUEST, exact(ipv6, t, [0xff; 8]))?;
        let mut found = None;
        self.receive(seq, false, &mut |s| found = Some(s))?;
        Ok(found)
    }

    /// Closes one full socket (`SOCK_DESTROY`, as `ss -K` does): the kernel aborts it, with a
    /// RST where its state calls for one. `Ok(false)` when it no longer exists.
    pub fn destroy(&mut self, s: &DiagSock) -> io::Result<bool> {
        let req = exact(s.tuple.laddr.is_ipv6(), &s.tuple, s.cookie.to_ne_bytes());
        let seq = self.send_as(Some(SOCK_DESTROY), NLM_F_REQUEST | NLM_F_ACK, req)?;
        self.receive(seq, false, &mut |_| {})
    }

    /// Every TCP socket of both families whose state bit is set in `states`.
    pub fn dump(&mut self, states: u32, with_info: bool) -> io::Result<Vec<DiagSock>> {
        let mut out = Vec::new();
        self.dump_each(states, with_info, &mut |s| out.push(s))?;
        Ok(out)
    }

    /// Like [`NetnsDiag::dump`], handing each socket to `each` instead of collecting them
    /// (a hundred thousand timewait sockets need not be held at once to be counted).
    pub fn dump_each(
        &mut self,
        states: u32,
        with_info: bool,
        each: &mut dyn FnMut(DiagSock),
    ) -> io::Result<()> {
        for (family, id) in [
            (AF_INET, SocketId::new_v4()),
            (AF_INET6, SocketId::new_v6()),
        ] {
            let req = InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: if with_info {
                    ExtensionFlags::INFO
                } else {
                    ExtensionFlags::empty()
                },
                states: StateFlags::from_bits_truncate(states),
                socket_id: id,
            };
            let seq = self.send(NLM_F_REQUEST | NLM_F_DUMP, req)?;
            self.receive(seq, true, each)?;
        }
        Ok(())
    }
}
