//! `tcptrace sysctl`: the TCP sysctls of one network namespace, what each governs, and the
//! budgets they imply.
use std::{io, path::PathBuf};

use anyhow::Context as _;
use tcptrace_core::{
    diagnose::budgets::budgets,
    sysctl::{KNOBS, Sysctls},
    wire::{self, Cold, SysctlReport},
};

use crate::{
    diag::{NetnsPaths, kernel_hz, read_namespace},
    flags::{Config, Format},
};

/// The namespace asked for: (inode, path to join; None = ours).
fn target(cfg: &Config) -> anyhow::Result<(u32, Option<PathBuf>)> {
    let mut paths = NetnsPaths::new();
    if let Some(pid) = cfg.pid {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let ino =
            std::fs::metadata(&path).with_context(|| format!("--pid {pid}: no such process"))?;
        let ino = std::os::unix::fs::MetadataExt::ino(&ino) as u32;
        return Ok((ino, (ino != paths.own()).then_some(path)));
    }
    let ns = match cfg.conn_filter.netns[..] {
        [] => paths.own(),
        [ns] => ns,
        _ => anyhow::bail!("sysctl reads one namespace: give one --netns"),
    };
    let path = paths.locate(ns).with_context(|| format!("--netns {ns}"))?;
    Ok((ns, path))
}

pub fn run(cfg: &Config) -> anyhow::Result<()> {
    let (ns, path) = target(cfg)?;
    let sys = read_namespace(path.as_deref(), kernel_hz())
        .with_context(|| format!("reading the sysctls of netns {ns}"))?
        .sysctls;
    let mut out = io::stdout().lock();
    let r = match cfg.format {
        Format::Json => json(&mut out, ns, &sys),
        Format::Text | Format::Line | Format::Raw | Format::None => text(&mut out, ns, &sys),
    };
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn text(out: &mut impl io::Write, ns: u32, sys: &Sysctls) -> io::Result<()> {
    writeln!(out, "TCP sysctls of network namespace {ns}:")?;
    for k in &KNOBS {
        let value = sys.raw(k.name).unwrap_or("(not on this kernel)");
        writeln!(out, "  {:<34} {:<14} {}", k.name, value, k.meaning)?;
    }
    if let Some(hz) = sys.hz {
        writeln!(
            out,
            "  {:<34} {:<14} kernel timer ticks per second (per-socket options are stored in ticks)",
            "CONFIG_HZ", hz
        )?;
    }
    writeln!(out, "\nWhat they mean here:")?;
    for b in budgets(sys) {
        writeln!(out, "  - {}", b.text)?;
    }
    Ok(())
}

fn json(out: &mut impl io::Write, ns: u32, sys: &Sysctls) -> io::Result<()> {
    let mut buf = Vec::new();
    wire::write_cold(&mut buf, &Cold::SysctlReport(SysctlReport::new(ns, sys)));
    buf.push(b'\n');
    out.write_all(&buf)?;
    out.flush()
}
