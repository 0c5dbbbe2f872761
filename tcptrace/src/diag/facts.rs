//! Namespace facts that are not sockets: a namespace's TCP sysctls, its TcpExt counters and
//! interface MTUs (read from a thread that joined it, since /proc/sys/net and
//! /proc/thread-self/net follow the reading thread's namespace), and the kernel's HZ.
use std::{
    collections::HashMap,
    ffi::CStr,
    fs::{self, File},
    io::{self, Read as _, Seek as _, SeekFrom},
    net::IpAddr,
    path::Path,
    process::Command,
};

use tcptrace_core::{
    diagnose::netns::parse_tcpext,
    sysctl::{KNOBS, Sysctls, hz_from_config, proc_path},
};

use super::netns::in_netns;

/// What one visit to a namespace read.
#[derive(Debug)]
pub struct NsReading {
    pub sysctls: Sysctls,
    /// Interface MTU by local address.
    pub mtus: Vec<(IpAddr, u32)>,
    /// The namespace's /proc/net/netstat, opened inside it: re-read with [`read_tcpext`]
    /// from any thread, so periodic samples need no visit.
    pub netstat: File,
}

/// The kernel's `CONFIG_HZ`, from /boot/config-$(uname -r) or /proc/config.gz.
pub fn kernel_hz() -> Option<u32> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    if let Ok(text) = fs::read_to_string(format!("/boot/config-{}", release.trim()))
        && let Some(hz) = hz_from_config(&text)
    {
        return Some(hz);
    }
    let out = Command::new("gzip")
        .args(["-dc", "/proc/config.gz"])
        .output()
        .ok()?;
    hz_from_config(&String::from_utf8_lossy(&out.stdout))
}

fn read_here(hz: Option<u32>) -> io::Result<NsReading> {
    let netstat = File::open("/proc/thread-self/net/netstat")?;
    let mut pairs = Vec::new();
    for k in &KNOBS {
        if let Ok(v) = fs::read_to_string(Path::new("/proc/sys").join(proc_path(k.name))) {
            pairs.push((k.name, v));
        }
    }
    if pairs.is_empty() {
        return Err(io::Error::other("no TCP sysctl readable under /proc/sys"));
    }
    Ok(NsReading {
        sysctls: Sysctls::from_read(pairs.iter().map(|(k, v)| (*k, v.as_str())), hz),
        mtus: interface_mtus(),
        netstat,
    })
}

/// Reads a namespace's sysctls and MTUs: `path` is its nsfs file, None for our own.
pub fn read_namespace(path: Option<&Path>, hz: Option<u32>) -> io::Result<NsReading> {
    match path {
        None => read_here(hz),
        Some(p) => in_netns(p, move || read_here(hz)),
    }
}

/// The TcpExt counters, read again from a netstat file opened by [`read_namespace`].
pub fn read_tcpext(netstat: &mut File) -> io::Result<Vec<(String, u64)>> {
    let mut text = String::new();
    netstat.seek(SeekFrom::Start(0))?;
    netstat.read_to_string(&mut text)?;
    Ok(parse_tcpext(&text))
}

/// The MTU of the interface holding each local address of the calling thread's namespace.
fn interface_mtus() -> Vec<(IpAddr, u32)> {
    let mut out = Vec::new();
    let mut mtu_by_name: HashMap<String, Option<u32>> = HashMap::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it declares.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sin6.sin6_addr.s6_addr)
                }
                _ => continue,
            }
        };
        let mtu = *mtu_by_name
            .entry(name.clone())
            .or_insert_with(|| mtu_of(&name));
        if let Some(m) = mtu {
            out.push((addr, m));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

fn mtu_of(name: &str) -> Option<u32> {
    // A socket of the calling thread's namespace, so the name means its interface.
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    let mut req: libc::ifreq = zeroed_ifreq();
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    use std::os::fd::AsRawFd as _;
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_ifru.ifru_mtu of a valid ifreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the kernel filled the mtu member of the union.
    Some(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

fn zeroed_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers/addresses); all
    // zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}
