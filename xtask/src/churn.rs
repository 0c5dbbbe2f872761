//! The loopback workloads the benchmarks trace: a connection churn (connect, accept, close as
//! fast as the threads go, for a fixed time) and a holder of many idle open connections.
use std::{
    io::{self, Read as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use socket2::{Domain, Socket, Type};

/// How a churn run went.
#[derive(Debug, Clone, Copy)]
pub struct ChurnResult {
    /// The loopback listener's port (the server side of every churn connection).
    pub port: u16,
    pub connections: u64,
    pub errors: u64,
    pub secs: f64,
}

impl ChurnResult {
    pub fn rate(&self) -> f64 {
        self.connections as f64 / self.secs
    }
}

fn listener(port: u16, backlog: i32) -> anyhow::Result<TcpListener> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    sock.bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    sock.listen(backlog)?;
    Ok(sock.into())
}

/// Connects and closes `threads` at a time to a loopback listener served by `threads` accept
/// loops that close what they accept, for `duration`. Both ends close at once, as short-lived
/// RPC connections do; the client's TIME_WAIT ports are reused on loopback (`tcp_tw_reuse=2`).
pub fn churn(threads: usize, duration: Duration) -> anyhow::Result<ChurnResult> {
    let listen = listener(0, 4096)?;
    let addr = listen.local_addr()?;
    // Servers outlive clients: a client waits for the server's close of what it connected.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_servers = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut servers = Vec::new();
    for _ in 0..threads {
        let l = listen.try_clone()?;
        let stop = stop_servers.clone();
        servers.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Dropping the accepted stream closes it.
                let _ = l.accept();
            }
        }));
    }
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..threads {
        let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
        clients.push(thread::spawn(move || {
            let (mut n, mut e) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                // The server closes first; reading its FIN keeps TIME_WAIT on the server side,
                // so the client's ephemeral ports stay free.
                match TcpStream::connect(addr).and_then(|mut s| s.read(&mut [0u8; 1])) {
                    Ok(_) => n += 1,
                    Err(_) => e += 1,
                }
            }
            done.fetch_add(n, Ordering::Relaxed);
            errors.fetch_add(e, Ordering::Relaxed);
        }));
    }
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let secs = start.elapsed().as_secs_f64();
    stop_servers.store(true, Ordering::Relaxed);
    // Wake the accept loops still blocked with one connection each.
    for _ in 0..threads {
        let _ = TcpStream::connect(addr);
    }
    for s in servers {
        let _ = s.join();
    }
    Ok(ChurnResult {
        port: addr.port(),
        connections: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs,
    })
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

/// Raises the soft open-file limit to `want` descriptors; fails when the hard limit is lower
/// (raising that needs CAP_SYS_RESOURCE, which containers often withhold).
pub fn raise_nofile(want: u64) -> anyhow::Result<()> {
    // SAFETY: rlimit is plain data that getrlimit fills.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    lim.rlim_cur = want;
    lim.rlim_max = lim.rlim_max.max(want);
    // SAFETY: setrlimit reads the struct we pass and has no other memory effects.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("raising the open-file limit to {want}"));
    }
    Ok(())
}

/// Connections one `hold` process keeps (two descriptors each), under common hard limits.
pub const HOLD_PER_PROCESS: usize = 9_000;

/// Loopback listener ports for `conns` held connections: each destination gives the client at
/// most one ephemeral port range's worth of source ports.
const PER_PORT: usize = 20_000;

/// Opens `conns` loopback connections and returns both ends of each (`2 × conns` sockets);
/// raises the open-file limit to hold them.
pub fn open_held(conns: usize) -> anyhow::Result<Vec<TcpStream>> {
    raise_nofile((2 * conns + 1024) as u64)?;
    let ports = conns.div_ceil(PER_PORT).max(1);
    let listeners = (0..ports)
        .map(|_| listener(0, 65_535))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut held = Vec::with_capacity(2 * conns);
    for i in 0..conns {
        let l = &listeners[i % ports];
        let c = TcpStream::connect(l.local_addr()?)
            .with_context(|| format!("connection {i} of {conns}"))?;
        let (s, _) = l.accept()?;
        held.push(c);
        held.push(s);
    }
    Ok(held)
}

/// Holds `conns` connections open until stdin closes or a line arrives; prints `ready N` once
/// all are established.
pub fn hold(conns: usize) -> anyhow::Result<()> {
    let held = open_held(conns)?;
    println!("ready {conns}");
    let mut buf = [0u8; 1];
    let _ = io::stdin().read(&mut buf);
    drop(held);
    Ok(())
}
