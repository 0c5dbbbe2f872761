//! Whether a tracer's records account for the churn: the connection records on the churn's
//! port in lifecycle JSON (written live, or rebuilt by `tcptrace replay` from a recording of
//! the same run), and how many of them admit a gap (`missed_*` or `lost_events` notes), next to
//! the losses the tracer reported.
use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Records on the churn's port, those with a gap, and those still open when tracing stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Completeness {
    pub records: u64,
    /// Noted `missed_*` or `lost_events`.
    pub gaps: u64,
    /// Ended `open`: still closing as tracing stopped right after the churn (a lost CLOSE
    /// would show too, but then events were lost and the record is noted).
    pub open: u64,
}

impl Completeness {
    pub fn add(&mut self, other: Completeness) {
        self.records += other.records;
        self.gaps += other.gaps;
        self.open += other.open;
    }
}

/// Counts the churn's records (`port` on either side) in a file of tcptrace JSON lines.
pub fn of_json(path: &Path, port: u16) -> anyhow::Result<Completeness> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (lport, rport) = (format!("\"lport\":{port},"), format!("\"rport\":{port},"));
    let mut c = Completeness::default();
    for line in BufReader::with_capacity(1 << 20, f).lines() {
        let line = line?;
        if !line.starts_with("{\"type\":\"conn\"")
            || !(line.contains(&lport) || line.contains(&rport))
        {
            continue;
        }
        c.records += 1;
        let notes = line.split_once("\"notes\":[").map_or("", |(_, n)| n);
        let noted = notes.starts_with("\"missed_")
            || notes.contains(",\"missed_")
            || notes.contains("\"lost_events\"");
        c.gaps += u64::from(noted);
        c.open += u64::from(line.contains("\"end\":\"open\""));
    }
    Ok(c)
}

/// Rebuilds the records of a recording with `tcptrace replay` and counts them.
pub fn of_recording(
    tcptrace: &Path,
    rec: &Path,
    port: u16,
    dir: &Path,
) -> anyhow::Result<Completeness> {
    let out = dir.join("replayed.json");
    let status = Command::new(tcptrace)
        .args(["replay", "--format", "json"])
        .arg(rec)
        .stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(Stdio::null())
        .status()
        .context("running tcptrace replay")?;
    if !status.success() {
        bail!("tcptrace replay {} failed ({status})", rec.display());
    }
    let c = of_json(&out, port);
    let _ = std::fs::remove_file(&out);
    c
}
