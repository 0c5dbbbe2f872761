//! The lab's throwaway network: two namespaces (the article's node2 = server, node3 = client)
//! joined by a veth pair (built by `tcptrace-netns`, as the privileged tests build theirs),
//! their sysctls and iptables rules, threads that act inside them, and the sockets left in
//! them at the end. Everything is removed when the [`Lab`] is dropped.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tcptrace_netns::{Addrs, NetPair, run};

use crate::diag::{DiagSock, NetnsDiag, spawn_in_netns};

/// Which host of the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// node2: listens.
    Server,
    /// node3: connects.
    Client,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

const SRV4_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 1);
const CLI4_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);
const SRV6_ADDR: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x199, 0, 0, 0, 0, 0, 1);
const CLI6_ADDR: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x199, 0, 0, 0, 0, 0, 2);
pub const SRV4: IpAddr = IpAddr::V4(SRV4_ADDR);
pub const CLI4: IpAddr = IpAddr::V4(CLI4_ADDR);
pub const SRV6: IpAddr = IpAddr::V6(SRV6_ADDR);

/// The lab's pair of namespaces (`tcptrace-lab-PID-srv`/`-cli`).
pub struct Lab {
    pair: NetPair,
}

impl Lab {
    /// Creates the two namespaces, the veth pair and the addresses.
    pub fn new() -> anyhow::Result<Self> {
        let id = std::process::id();
        let (vs, vc) = (
            format!("tl{}s", id % 1_000_000),
            format!("tl{}c", id % 1_000_000),
        );
        let pair = NetPair::new(
            &format!("tcptrace-lab-{id}"),
            (&vs, &vc),
            Addrs {
                srv4: SRV4_ADDR,
                cli4: CLI4_ADDR,
                srv6: SRV6_ADDR,
                cli6: CLI6_ADDR,
            },
        )?;
        Ok(Self { pair })
    }

    fn name(&self, side: Side) -> &str {
        match side {
            Side::Server => &self.pair.srv,
            Side::Client => &self.pair.cli,
        }
    }

    pub fn path(&self, side: Side) -> PathBuf {
        NetPair::path(self.name(side))
    }

    /// The namespace's inode, as events carry it.
    pub fn inode(&self, side: Side) -> anyhow::Result<u32> {
        Ok(NetPair::inode(self.name(side))? as u32)
    }

    /// Sets `net.x.y` inside the side's namespace.
    pub fn sysctl(&self, side: Side, name: &str, value: &str) -> anyhow::Result<()> {
        NetPair::sysctl(self.name(side), name, value)
            .with_context(|| format!("in the {} namespace", side.name()))
    }

    /// Adds an iptables rule in the side's namespace (`ip6tables` when `v6`).
    pub fn firewall(&self, side: Side, v6: bool, rule: &[&str]) -> anyhow::Result<()> {
        let tool = if v6 { "ip6tables" } else { "iptables" };
        let mut args = vec!["ip", "netns", "exec", self.name(side), tool, "-w"];
        args.extend_from_slice(rule);
        run(&args)?;
        Ok(())
    }

    /// Runs `f` on a thread that first joins the side's namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        side: Side,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> JoinHandle<anyhow::Result<T>> {
        spawn_in_netns(&self.path(side), f)
    }
}

/// Full sockets of every state but TIME_WAIT, CLOSE and NEW_SYN_RECV (timewait and request
/// sockets go with their namespace; full ones keep it alive, and orphans among them would go
/// on retransmitting in a namespace nobody can see).
const FULL_STATES: u32 = !((1 << 6) | (1 << 7) | (1 << 12)) & 0x1ffe;

impl Lab {
    /// The full sockets still in the lab's namespaces.
    pub fn leftovers(&self) -> anyhow::Result<Vec<(Side, DiagSock)>> {
        let mut out = Vec::new();
        for side in [Side::Server, Side::Client] {
            let mut diag = NetnsDiag::open(&self.path(side))?;
            for s in diag.dump(FULL_STATES, false)? {
                out.push((side, s));
            }
        }
        Ok(out)
    }

    /// Waits up to `wait` for the scenario's sockets to finish on their own (their ends are
    /// part of what the lab shows).
    pub fn wait_for_sockets(&self, wait: Duration) -> anyhow::Result<usize> {
        let end = Instant::now() + wait;
        loop {
            let left = self.leftovers()?.len();
            if left == 0 || Instant::now() >= end {
                return Ok(left);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Closes every full socket left in the lab's namespaces (`SOCK_DESTROY`), so deleting
    /// the namespaces leaves nothing behind: an orphan retransmitting its FIN would otherwise
    /// keep a deleted namespace alive and show up in later traces. Returns how many it closed.
    /// A kernel built without `CONFIG_INET_DIAG_DESTROY` refuses (EOPNOTSUPP): then the
    /// survivors are named in a warning and left to their own timers.
    pub fn kill_sockets(&self) -> anyhow::Result<usize> {
        let mut killed = 0;
        for (side, s) in self.leftovers()? {
            let mut diag = NetnsDiag::open(&self.path(side))?;
            match diag.destroy(&s) {
                Ok(true) => killed += 1,
                Ok(false) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => break,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("closing a leftover socket in the {} namespace", side.name())
                    });
                }
            }
        }
        let left = self.leftovers()?;
        if !left.is_empty() {
            log::warn!(
                target: "lab",
                "{} sockets outlive the lab namespaces (this kernel cannot close them: no CONFIG_INET_DIAG_DESTROY): {:?}",
                left.len(),
                left.iter().map(|(_, s)| s.tuple).collect::<Vec<_>>()
            );
        }
        Ok(killed)
    }
}

/// Joins an actor thread, turning a panic into an error.
pub fn join<T>(h: JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("lab thread panicked"))?
}
