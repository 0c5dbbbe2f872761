//! The lab's throwaway network: two namespaces (the article's node2 = server, node3 = client)
//! joined by a veth pair, their sysctls and iptables rules, and threads that act inside them.
//! Everything is removed when the [`Lab`] is dropped.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::Command,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

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

pub const SRV4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 199, 0, 1));
pub const CLI4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 199, 0, 2));
pub const SRV6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x199, 0, 0, 0, 0, 0, 1));
pub const CLI6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x199, 0, 0, 0, 0, 0, 2));

pub struct Lab {
    names: [String; 2],
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lab {
    /// Creates the two namespaces, the veth pair and the addresses.
    pub fn new() -> anyhow::Result<Self> {
        let id = std::process::id();
        let lab = Self {
            names: [
                format!("tcptrace-lab-{id}-srv"),
                format!("tcptrace-lab-{id}-cli"),
            ],
        };
        let [srv, cli] = &lab.names;
        let (vs, vc) = (
            format!("tl{}s", id % 1_000_000),
            format!("tl{}c", id % 1_000_000),
        );
        sh(&["ip", "netns", "add", srv])?;
        sh(&["ip", "netns", "add", cli])?;
        sh(&[
            "ip", "link", "add", &vs, "type", "veth", "peer", "name", &vc,
        ])?;
        sh(&["ip", "link", "set", &vs, "netns", srv])?;
        sh(&["ip", "link", "set", &vc, "netns", cli])?;
        for (ns, dev, v4, v6) in [(srv, &vs, SRV4, SRV6), (cli, &vc, CLI4, CLI6)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ])?;
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn name(&self, side: Side) -> &str {
        &self.names[side as usize]
    }

    pub fn path(&self, side: Side) -> PathBuf {
        PathBuf::from("/run/netns").join(self.name(side))
    }

    /// The namespace's inode, as events carry it.
    pub fn inode(&self, side: Side) -> anyhow::Result<u32> {
        let meta = fs::metadata(self.path(side))?;
        Ok(meta.ino() as u32)
    }

    /// Sets `net.x.y` inside the side's namespace.
    pub fn sysctl(&self, side: Side, name: &str, value: &str) -> anyhow::Result<()> {
        let file = PathBuf::from("/proc/sys").join(name.replace('.', "/"));
        let value = value.to_string();
        let shown = format!("{name}={value} in the {} namespace", side.name());
        self.spawn(side, move || Ok(fs::write(&file, value.as_bytes())?))
            .join()
            .map_err(|_| anyhow::anyhow!("sysctl thread panicked"))?
            .with_context(|| shown)
    }

    /// Adds an iptables rule in the side's namespace (`ip6tables` when `v6`).
    pub fn firewall(&self, side: Side, v6: bool, rule: &[&str]) -> anyhow::Result<()> {
        let tool = if v6 { "ip6tables" } else { "iptables" };
        let mut args = vec!["ip", "netns", "exec", self.name(side), tool, "-w"];
        args.extend_from_slice(rule);
        sh(&args)
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
    /// keep a deleted namespace alive and show up in later traces. Returns how many it closed;
    /// an error if any survives.
    pub fn kill_sockets(&self) -> anyhow::Result<usize> {
        let mut killed = 0;
        for (side, s) in self.leftovers()? {
            let mut diag = NetnsDiag::open(&self.path(side))?;
            if diag.destroy(&s).with_context(|| {
                format!("closing a leftover socket in the {} namespace", side.name())
            })? {
                killed += 1;
            }
        }
        let left = self.leftovers()?;
        if !left.is_empty() {
            bail!(
                "{} sockets survived in the lab namespaces: {:?}",
                left.len(),
                left.iter().map(|(_, s)| s.tuple).collect::<Vec<_>>()
            );
        }
        Ok(killed)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Joins an actor thread, turning a panic into an error.
pub fn join<T>(h: JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("lab thread panicked"))?
}
