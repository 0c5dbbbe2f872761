//! The article's experiments (and a few beyond it) as scripts over a [`Lab`]: the sysctls each
//! scales down, what each does with sockets and iptables, and the diagnoses it must produce.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr},
    sync::mpsc,
    thread::sleep,
    time::Duration,
};

use anyhow::Context as _;
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};

use super::net::{Lab, SRV4, SRV6, Side, join};

pub const PORT: u16 = 9527;

/// A diagnosis a scenario must produce: from a connection record of `side` (or, with
/// `netns_wide`, a namespace finding of that side's namespace).
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub side: Side,
    pub rule: &'static str,
    pub netns_wide: bool,
}

const fn conn(side: Side, rule: &'static str) -> Expect {
    Expect {
        side,
        rule,
        netns_wide: false,
    }
}

const fn wide(side: Side, rule: &'static str) -> Expect {
    Expect {
        side,
        rule,
        netns_wide: true,
    }
}

pub struct Scenario {
    pub name: &'static str,
    /// Row of SCENARIOS.md / the article's experiment.
    pub article: &'static str,
    pub what: &'static str,
    /// Scaled-down sysctls, set before tracing starts.
    pub sysctls: &'static [(Side, &'static str, &'static str)],
    pub expect: &'static [Expect],
    pub run: fn(&Lab) -> anyhow::Result<()>,
}

use Side::{Client, Server};

pub const SCENARIOS: [Scenario; 17] = [
    Scenario {
        name: "handshake",
        article: "1 three-way handshake",
        what: "connect, exchange a few bytes, client closes: options negotiated on both sides",
        sysctls: &[],
        expect: &[conn(Client, "handshake"), conn(Server, "handshake")],
        run: |lab| exchange(lab, SRV4),
    },
    Scenario {
        name: "syn-sent",
        article: "2 SYN_SENT timeout",
        what: "the server drops SYNs to the port; connect() times out (tcp_syn_retries=2)",
        sysctls: &[(Client, "net.ipv4.tcp_syn_retries", "2")],
        expect: &[conn(Client, "connect_timeout")],
        run: syn_sent,
    },
    Scenario {
        name: "syn-recv",
        article: "3 SYN_RECV / half-open",
        what: "the client drops everything from the server port after one SYN; the server retransmits SYN-ACK (tcp_synack_retries=2)",
        sysctls: &[(Server, "net.ipv4.tcp_synack_retries", "2")],
        expect: &[conn(Server, "half_open")],
        run: syn_recv,
    },
    Scenario {
        name: "backlog",
        article: "4 SYN flood / accept queue overflow",
        what: "a listener with backlog 1 never accepts; six clients connect",
        sysctls: &[],
        expect: &[wide(Server, "listen_overflow")],
        run: backlog,
    },
    Scenario {
        name: "close",
        article: "5 orderly close",
        what: "the client closes first: FIN_WAIT1, FIN_WAIT2, TIME_WAIT on the client; CLOSE_WAIT, LAST_ACK on the server",
        sysctls: &[],
        expect: &[conn(Client, "time_wait")],
        run: |lab| exchange(lab, SRV4),
    },
    Scenario {
        name: "time-wait",
        article: "6 TIME_WAIT exhaustion",
        what: "60 short connections against 50 local ports (ip_local_port_range=40000 40049, tcp_tw_reuse=0)",
        sysctls: &[
            (Client, "net.ipv4.ip_local_port_range", "40000 40049"),
            (Client, "net.ipv4.tcp_tw_reuse", "0"),
        ],
        expect: &[
            conn(Client, "local_port_exhausted"),
            wide(Client, "time_wait_pressure"),
        ],
        run: |lab| churn(lab, 60),
    },
    Scenario {
        name: "time-wait-buckets",
        article: "6 TIME_WAIT bucket overflow",
        what: "40 short connections with tcp_max_tw_buckets=20: the rest close without TIME_WAIT",
        sysctls: &[(Client, "net.ipv4.tcp_max_tw_buckets", "20")],
        expect: &[wide(Client, "time_wait_overflow")],
        run: |lab| churn(lab, 40),
    },
    Scenario {
        name: "fin-wait1",
        article: "7 FIN_WAIT1",
        what: "the server drops FINs to the port; the closed client retransmits its FIN (tcp_orphan_retries=2)",
        sysctls: &[(Client, "net.ipv4.tcp_orphan_retries", "2")],
        expect: &[conn(Client, "orphan_fin_timeout")],
        run: fin_wait1,
    },
    Scenario {
        name: "fin-wait2",
        article: "8 FIN_WAIT2 / LAST_ACK",
        what: "the client drops FINs from the server port: client FIN_WAIT2 for tcp_fin_timeout=3, server LAST_ACK retries (tcp_orphan_retries=2)",
        sysctls: &[
            (Client, "net.ipv4.tcp_fin_timeout", "3"),
            (Server, "net.ipv4.tcp_orphan_retries", "2"),
        ],
        expect: &[
            conn(Client, "fin_wait2_timeout"),
            conn(Server, "orphan_fin_timeout"),
        ],
        run: fin_wait2,
    },
    Scenario {
        name: "keepalive",
        article: "9 keepalive",
        what: "an idle SO_KEEPALIVE client whose server goes silent (tcp_keepalive_time=2, intvl=1, probes=2)",
        sysctls: &[
            (Client, "net.ipv4.tcp_keepalive_time", "2"),
            (Client, "net.ipv4.tcp_keepalive_intvl", "1"),
            (Client, "net.ipv4.tcp_keepalive_probes", "2"),
        ],
        expect: &[conn(Client, "keepalive_timeout")],
        run: |lab| keepalive(lab, false),
    },
    Scenario {
        name: "keepalive-override",
        article: "9 keepalive (Go-style per-socket values)",
        what: "the client sets TCP_KEEPIDLE=1 s, TCP_KEEPINTVL=1 s, TCP_KEEPCNT=2 itself; the sysctls keep their defaults",
        sysctls: &[],
        expect: &[conn(Client, "keepalive_timeout")],
        run: |lab| keepalive(lab, true),
    },
    Scenario {
        name: "refused",
        article: "beyond: connection refused",
        what: "nothing listens on the port: RST in SYN_SENT",
        sysctls: &[],
        expect: &[conn(Client, "refused")],
        run: refused,
    },
    Scenario {
        name: "reset",
        article: "beyond: abortive close",
        what: "the client closes with SO_LINGER 0: RST instead of FIN",
        sysctls: &[],
        expect: &[conn(Client, "reset"), conn(Server, "reset")],
        run: reset,
    },
    Scenario {
        name: "data-timeout",
        article: "beyond: data retransmission timeout",
        what: "the server goes silent while the client sends (tcp_retries2=3)",
        sysctls: &[(Client, "net.ipv4.tcp_retries2", "3")],
        expect: &[conn(Client, "data_timeout")],
        run: data_timeout,
    },
    Scenario {
        name: "user-timeout",
        article: "beyond: TCP_USER_TIMEOUT",
        what: "the server goes silent while the client, with TCP_USER_TIMEOUT=3000 ms, sends (tcp_retries2 stays 15)",
        sysctls: &[],
        expect: &[conn(Client, "data_timeout")],
        run: user_timeout,
    },
    Scenario {
        name: "keepalive-user-timeout",
        article: "9 keepalive with TCP_USER_TIMEOUT",
        what: "an idle client with TCP_KEEPIDLE=1 s, TCP_KEEPINTVL=1 s, TCP_KEEPCNT=10 and TCP_USER_TIMEOUT=2500 ms; the server goes silent",
        sysctls: &[],
        expect: &[conn(Client, "keepalive_timeout")],
        run: keepalive_user_timeout,
    },
    Scenario {
        name: "ipv6",
        article: "beyond: IPv6",
        what: "the handshake over IPv6 (MSS = MTU - 60)",
        sysctls: &[],
        expect: &[conn(Client, "handshake"), conn(Server, "handshake")],
        run: |lab| exchange(lab, SRV6),
    },
];

fn addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, PORT)
}

fn listener(ip: IpAddr, backlog: i32) -> anyhow::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr(ip)), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr(ip).into())?;
    s.listen(backlog)?;
    Ok(s)
}

fn client(ip: IpAddr) -> anyhow::Result<Socket> {
    Ok(Socket::new(
        Domain::for_address(addr(ip)),
        Type::STREAM,
        None,
    )?)
}

/// A server that accepts `n` connections and hands each to `each`, then returns.
fn serve(
    lab: &Lab,
    ip: IpAddr,
    n: usize,
    each: fn(Socket) -> anyhow::Result<()>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let (tx, rx) = mpsc::channel();
    let h = lab.spawn(Server, move || {
        let l = listener(ip, 128)?;
        let _ = tx.send(());
        for _ in 0..n {
            let (s, _) = l.accept()?;
            each(s)?;
        }
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5))
        .context("the lab server did not start")?;
    Ok(h)
}

/// Reads until EOF or error, then closes.
fn drain_then_close(mut s: Socket) -> anyhow::Result<()> {
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    Ok(())
}

/// iptables rules the scenarios use (appended to INPUT of one side).
const DROP_TO_PORT: &[&str] = &["-A", "INPUT", "-p", "tcp", "--dport", "9527", "-j", "DROP"];
const DROP_FROM_PORT: &[&str] = &["-A", "INPUT", "-p", "tcp", "--sport", "9527", "-j", "DROP"];
const DROP_FIN_TO_PORT: &[&str] = &[
    "-A",
    "INPUT",
    "-p",
    "tcp",
    "--dport",
    "9527",
    "--tcp-flags",
    "FIN",
    "FIN",
    "-j",
    "DROP",
];
const DROP_FIN_FROM_PORT: &[&str] = &[
    "-A",
    "INPUT",
    "-p",
    "tcp",
    "--sport",
    "9527",
    "--tcp-flags",
    "FIN",
    "FIN",
    "-j",
    "DROP",
];

/// A client socket connected to `ip`.
fn connected(ip: IpAddr) -> anyhow::Result<Socket> {
    let c = client(ip)?;
    c.connect(&addr(ip).into())?;
    Ok(c)
}

/// A client socket whose SYN is on its way (non-blocking connect, not waited for).
fn connecting(ip: IpAddr) -> anyhow::Result<Socket> {
    let c = client(ip)?;
    c.set_nonblocking(true)?;
    let _ = c.connect(&addr(ip).into());
    Ok(c)
}

/// The operation must fail with `errno`.
fn expect_errno<T: std::fmt::Debug>(
    r: std::io::Result<T>,
    errno: i32,
    what: &str,
) -> anyhow::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        other => anyhow::bail!("expected {what}, got {other:?}"),
    }
}

/// A listener that never accepts, held until the returned sender is used (or dropped).
fn idle_listener(
    lab: &Lab,
    backlog: i32,
) -> anyhow::Result<(
    mpsc::Sender<()>,
    std::thread::JoinHandle<anyhow::Result<()>>,
)> {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let h = lab.spawn(Server, move || {
        let _l = listener(SRV4, backlog)?;
        let _ = ready_tx.send(());
        let _ = release_rx.recv();
        Ok(())
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the lab listener did not start")?;
    Ok((release_tx, h))
}

/// A client connects, `setup` adjusts its socket, and it closes 100 ms later.
fn connect_and_close(lab: &Lab, setup: fn(&Socket) -> std::io::Result<()>) -> anyhow::Result<()> {
    join(lab.spawn(Client, move || {
        let c = connected(SRV4)?;
        setup(&c)?;
        sleep(Duration::from_millis(100));
        Ok(())
    }))
}

/// A connected client whose server then goes silent (everything to the port dropped):
/// `before` runs on the socket before the silence, `after` once it began; the client's read
/// must then fail with ETIMEDOUT. The server holds its side for `hold`.
fn silenced_server(
    lab: &Lab,
    hold: Duration,
    before: fn(&mut Socket) -> std::io::Result<()>,
    after: fn(&mut Socket) -> std::io::Result<()>,
    what: &'static str,
) -> anyhow::Result<()> {
    let (srv_tx, srv_rx) = mpsc::channel::<()>();
    let srv = lab.spawn(Server, move || {
        let l = listener(SRV4, 128)?;
        let _ = srv_tx.send(());
        let (s, _) = l.accept()?;
        sleep(hold);
        drop(s);
        Ok(())
    });
    srv_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the lab server did not start")?;
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let cli = lab.spawn(Client, move || {
        let mut c = connected(SRV4)?;
        before(&mut c)?;
        let _ = ready_tx.send(());
        let _ = go_rx.recv();
        after(&mut c)?;
        expect_errno(c.read(&mut [0u8; 1]), libc::ETIMEDOUT, what)
    });
    ready_rx.recv_timeout(Duration::from_secs(5))?;
    lab.firewall(Server, false, DROP_TO_PORT)?;
    let _ = go_tx.send(());
    join(cli)?;
    join(srv)
}

fn exchange(lab: &Lab, ip: IpAddr) -> anyhow::Result<()> {
    let srv = serve(lab, ip, 1, |mut s| {
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        s.write_all(b"world")?;
        drain_then_close(s)
    })?;
    join(lab.spawn(Client, move || {
        let mut c = connected(ip)?;
        c.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf)?;
        sleep(Duration::from_millis(100));
        Ok(())
    }))?;
    join(srv)
}

fn syn_sent(lab: &Lab) -> anyhow::Result<()> {
    lab.firewall(Server, false, DROP_TO_PORT)?;
    join(lab.spawn(Client, || {
        let c = client(SRV4)?;
        expect_errno(c.connect(&addr(SRV4).into()), libc::ETIMEDOUT, "ETIMEDOUT")
    }))
}

fn syn_recv(lab: &Lab) -> anyhow::Result<()> {
    lab.firewall(Client, false, DROP_FROM_PORT)?;
    let (release, srv) = idle_listener(lab, 128)?;
    join(lab.spawn(Client, || {
        // One SYN, like `nmap -sS`: connect without waiting, then give up before a retry.
        let _c = connecting(SRV4)?;
        sleep(Duration::from_millis(200));
        Ok(())
    }))?;
    // Retransmits at 1 and 3 s, dropped at 7 s; the check runs after 1.5 s without one.
    sleep(Duration::from_secs(10));
    let _ = release.send(());
    join(srv)
}

fn backlog(lab: &Lab) -> anyhow::Result<()> {
    let (release, srv) = idle_listener(lab, 1)?;
    sleep(Duration::from_millis(300));
    join(lab.spawn(Client, || {
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(connecting(SRV4)?);
            sleep(Duration::from_millis(100));
        }
        sleep(Duration::from_millis(2500));
        Ok(())
    }))?;
    let _ = release.send(());
    join(srv)
}

fn churn(lab: &Lab, n: usize) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<()>();
    let srv = lab.spawn(Server, move || {
        let l = listener(SRV4, 128)?;
        l.set_nonblocking(true)?;
        let _ = tx.send(());
        let mut idle = 0;
        while idle < 40 {
            match l.accept() {
                Ok((s, _)) => {
                    idle = 0;
                    s.set_nonblocking(false)?;
                    drain_then_close(s)?;
                }
                Err(_) => {
                    idle += 1;
                    sleep(Duration::from_millis(100));
                }
            }
        }
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5))?;
    let failed = join(lab.spawn(Client, move || {
        let mut failed = 0;
        for _ in 0..n {
            let c = client(SRV4)?;
            match c.connect(&addr(SRV4).into()) {
                Ok(()) => drop(c),
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => failed += 1,
                Err(e) => return Err(e.into()),
            }
            sleep(Duration::from_millis(40));
        }
        Ok(failed)
    }))?;
    eprintln!("tcptrace lab: {failed} of {n} connects failed with EADDRNOTAVAIL");
    // Let a namespace sample see the final TIME_WAIT count.
    sleep(Duration::from_millis(2500));
    join(srv)
}

fn fin_wait1(lab: &Lab) -> anyhow::Result<()> {
    lab.firewall(Server, false, DROP_FIN_TO_PORT)?;
    let srv = serve(lab, SRV4, 1, |s| {
        // Holds the connection while the client's FIN is being dropped.
        sleep(Duration::from_secs(4));
        drop(s);
        Ok(())
    })?;
    connect_and_close(lab, |_| Ok(()))?;
    join(srv)
}

fn fin_wait2(lab: &Lab) -> anyhow::Result<()> {
    lab.firewall(Client, false, DROP_FIN_FROM_PORT)?;
    let srv = serve(lab, SRV4, 1, drain_then_close)?;
    connect_and_close(lab, |_| Ok(()))?;
    join(srv)?;
    // The client's FIN_WAIT2 lasts 3 s; the server's LAST_ACK retries ≈3.3 s.
    sleep(Duration::from_secs(4));
    Ok(())
}

fn keepalive(lab: &Lab, own_values: bool) -> anyhow::Result<()> {
    let before: fn(&mut Socket) -> std::io::Result<()> = if own_values {
        |c| {
            let ka = TcpKeepalive::new()
                .with_time(Duration::from_secs(1))
                .with_interval(Duration::from_secs(1))
                .with_retries(2);
            c.set_tcp_keepalive(&ka)
        }
    } else {
        |c| SockRef::from(&*c).set_keepalive(true)
    };
    silenced_server(
        lab,
        Duration::from_secs(8),
        before,
        |_| Ok(()),
        "ETIMEDOUT from keepalive",
    )
}

fn refused(lab: &Lab) -> anyhow::Result<()> {
    join(lab.spawn(Client, || {
        let c = client(SRV4)?;
        expect_errno(
            c.connect(&addr(SRV4).into()),
            libc::ECONNREFUSED,
            "ECONNREFUSED",
        )
    }))
}

fn reset(lab: &Lab) -> anyhow::Result<()> {
    let srv = serve(lab, SRV4, 1, drain_then_close)?;
    connect_and_close(lab, |c| c.set_linger(Some(Duration::ZERO)))?;
    join(srv)
}

fn data_timeout(lab: &Lab) -> anyhow::Result<()> {
    silenced_server(
        lab,
        Duration::from_secs(10),
        |_| Ok(()),
        |c| c.write_all(&[b'x'; 1000]),
        "ETIMEDOUT from retransmissions",
    )
}

fn user_timeout(lab: &Lab) -> anyhow::Result<()> {
    silenced_server(
        lab,
        Duration::from_secs(6),
        |c| c.set_tcp_user_timeout(Some(Duration::from_millis(3000))),
        |c| c.write_all(&[b'x'; 1000]),
        "ETIMEDOUT from TCP_USER_TIMEOUT",
    )
}

fn keepalive_user_timeout(lab: &Lab) -> anyhow::Result<()> {
    silenced_server(
        lab,
        Duration::from_secs(6),
        |c| {
            let ka = TcpKeepalive::new()
                .with_time(Duration::from_secs(1))
                .with_interval(Duration::from_secs(1))
                .with_retries(10);
            c.set_tcp_keepalive(&ka)?;
            c.set_tcp_user_timeout(Some(Duration::from_millis(2500)))
        },
        |_| Ok(()),
        "ETIMEDOUT from keepalive with TCP_USER_TIMEOUT",
    )
}
