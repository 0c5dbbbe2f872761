//! Validated configuration built from [`Args`]: every user error is reported here, in one line.
use std::{os::unix::fs::MetadataExt as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use tcptrace_common::{AF_INET, AF_INET6, Filter, MAX_PORTS};

use super::args::{Args, FormatArg, TracepointsArg};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Tracepoint attachment policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TracepointMode {
    Auto,
    Btf,
    Classic,
}

/// Everything the program needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub format: Format,
    pub duration: Option<Duration>,
    pub filter: Filter,
    pub ring_bytes: u32,
    pub tracepoints: TracepointMode,
    /// `None`: run without BTF.
    pub btf: Option<PathBuf>,
    pub header: bool,
}

impl Config {
    pub fn from_args(args: Args) -> anyhow::Result<Self> {
        let duration = match args.duration {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Some(Duration::from_secs_f64(s)),
            Some(s) => bail!("--duration must be a positive number of seconds, got {s}"),
        };
        let mut filter = Filter::default();
        if args.ipv4 {
            filter.family = AF_INET;
        } else if args.ipv6 {
            filter.family = AF_INET6;
        }
        if let Some(pid) = args.pid {
            if pid == 0 {
                bail!("--pid must be a process id, not 0");
            }
            filter.tgid = pid;
        }
        filter.n_lports = ports(&args.lports, &mut filter.lports, "--lport")?;
        filter.n_rports = ports(&args.rports, &mut filter.rports, "--rport")?;
        if let Some(ns) = &args.netns {
            filter.netns = netns_inode(ns)?;
        }
        let btf = (args.btf.as_os_str() != "none").then_some(args.btf);
        let tracepoints = match args.tracepoints {
            TracepointsArg::Auto => TracepointMode::Auto,
            TracepointsArg::Btf => TracepointMode::Btf,
            TracepointsArg::Classic => TracepointMode::Classic,
        };
        if btf.is_none() && tracepoints == TracepointMode::Btf {
            bail!("--tracepoints btf needs kernel BTF, but --btf none was given");
        }
        if btf.is_none() && filter.netns != 0 {
            bail!(
                "--netns needs kernel BTF to read a socket's namespace, but --btf none was given"
            );
        }
        Ok(Self {
            format: match args.format {
                FormatArg::Text => Format::Text,
                FormatArg::Json => Format::Json,
            },
            duration,
            filter,
            ring_bytes: ring_size(&args.ring_buffer)?,
            tracepoints,
            btf,
            header: !args.no_header,
        })
    }
}

fn ports(list: &[u16], out: &mut [u16; MAX_PORTS], flag: &str) -> anyhow::Result<u8> {
    if list.len() > MAX_PORTS {
        bail!("{flag} takes at most {MAX_PORTS} ports, got {}", list.len());
    }
    if list.contains(&0) {
        bail!("{flag}: port 0 cannot be traced");
    }
    out[..list.len()].copy_from_slice(list);
    Ok(list.len() as u8)
}

/// Parses a ring buffer size: a power of two of at least one page, at most 1 GiB.
pub fn ring_size(text: &str) -> anyhow::Result<u32> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1u64 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1u64 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--ring-buffer: {text:?} is not a size like 4M"))?;
    let bytes = n.saturating_mul(mult);
    if !bytes.is_power_of_two() || !(4096..=(1 << 30)).contains(&bytes) {
        bail!("--ring-buffer must be a power of two between 4K and 1G, got {text}");
    }
    Ok(bytes as u32)
}

/// Network namespace inode from a number or a namespace file path.
fn netns_inode(text: &str) -> anyhow::Result<u32> {
    if let Ok(n) = text.parse::<u32>() {
        if n == 0 {
            bail!("--netns: 0 is not a namespace inode");
        }
        return Ok(n);
    }
    let meta = std::fs::metadata(text).with_context(|| format!("--netns: cannot open {text}"))?;
    u32::try_from(meta.ino()).with_context(|| format!("--netns: inode of {text} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        let mut v = vec!["tcptrace"];
        v.extend_from_slice(args);
        Config::from_args(Args::try_parse_from(v)?)
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(ring_size("4M").unwrap(), 4 << 20);
        assert_eq!(ring_size("65536").unwrap(), 65536);
        assert_eq!(ring_size("64k").unwrap(), 65536);
        assert!(ring_size("3M").is_err());
        assert!(ring_size("1K").is_err());
        assert!(ring_size("2G").is_err());
        assert!(ring_size("lots").is_err());
    }

    #[test]
    fn filters_are_validated() {
        let c = parse(&["--events", "-L", "80,443", "-D", "9527", "-4", "-p", "7"]).unwrap();
        assert_eq!(c.filter.n_lports, 2);
        assert_eq!(&c.filter.lports[..2], &[80, 443]);
        assert_eq!(c.filter.rports[0], 9527);
        assert_eq!(c.filter.family, AF_INET);
        assert_eq!(c.filter.tgid, 7);
        assert!(parse(&["-L", "1,2,3,4,5,6,7,8,9"]).is_err());
        assert!(parse(&["-L", "0"]).is_err());
        assert!(parse(&["-p", "0"]).is_err());
        assert!(parse(&["--duration", "-1"]).is_err());
        assert!(parse(&["--duration", "nan"]).is_err());
        assert!(parse(&["-4", "-6"]).is_err());
        assert!(parse(&["--netns", "/nonexistent/ns"]).is_err());
        assert_eq!(
            parse(&["--netns", "4026531840"]).unwrap().filter.netns,
            4026531840
        );
        assert!(parse(&["--btf", "none", "--tracepoints", "btf"]).is_err());
    }
}
