//! The binary recording (`tcptrace --events --format raw`): the kernel's records exactly as
//! the ring buffer held them, framed, with the JSON lines of everything else (userspace facts,
//! sysctls, samples, losses) in between, so `replay` runs the live decode path at full speed.
//!
//! Layout: [`MAGIC`], then frames of `tag: u8`, `len: u32` (little endian), `len` bytes.
//! The context frame's writer and reader are here too.
use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use super::{WireError, ordered};
use crate::{context::Context, snapshot::SnapLayout};

/// First bytes of a recording (the version is its last byte).
pub const MAGIC: &[u8; 16] = b"tcptrace-raw\0\0\0\x02";

/// Whether `head` (the first bytes of a file) starts a binary recording: `Ok(true)` for one
/// this reader takes, an error naming the version for one it does not.
pub fn is_recording(head: &[u8]) -> Result<bool, String> {
    let n = MAGIC.len() - 1;
    if head.len() < MAGIC.len() || head[..n] != MAGIC[..n] {
        return Ok(false);
    }
    match head[n] {
        v if v == MAGIC[n] => Ok(true),
        v => Err(format!(
            "raw recording version {v} is not supported (this tcptrace reads version {})",
            MAGIC[n]
        )),
    }
}

/// Longest frame accepted when reading (a kernel record is a few hundred bytes; a JSON line
/// with a large namespace sample a few kilobytes).
const MAX_FRAME: u32 = 1 << 20;

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// One ring-buffer record, undecoded.
    Record = 1,
    /// One JSON line as `--format json` writes it (without the newline).
    Json = 2,
    /// The recording's context, before its first record: a JSON object with
    /// `clock_offset_ns`, `snap` ([`SnapLayout::to_text`](crate::snapshot::SnapLayout::to_text))
    /// and `reset_reasons` (code → name).
    Context = 3,
}

/// Appends one frame to `buf`.
pub fn push_frame(buf: &mut Vec<u8>, tag: Tag, payload: &[u8]) {
    buf.push(tag as u8);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Reads the next frame into `payload`; `None` at a clean end of the stream. A stream that
/// ends inside a frame is an `UnexpectedEof` error.
pub fn read_frame<R: Read + ?Sized>(r: &mut R, payload: &mut Vec<u8>) -> io::Result<Option<Tag>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..])?;
    let tag = match head[0] {
        1 => Tag::Record,
        2 => Tag::Json,
        3 => Tag::Context,
        t => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown frame tag {t}"),
            ));
        }
    };
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too long"),
        ));
    }
    payload.resize(len as usize, 0);
    r.read_exact(payload)?;
    Ok(Some(tag))
}

/// The context frame: what a kernel record needs to be decoded and printed as it was live.
#[derive(Debug, Clone, PartialEq)]
pub struct RawContext {
    pub clock_offset_ns: i64,
    pub snap: SnapLayout,
    pub reset_reasons: Vec<(u32, String)>,
}

#[derive(Serialize, Deserialize)]
struct ContextFrame {
    #[serde(rename = "type")]
    ty: String,
    clock_offset_ns: i64,
    snap: String,
    #[serde(default, with = "ordered")]
    reset_reasons: Vec<(String, String)>,
}

impl RawContext {
    /// The context of a live recording.
    pub fn of(ctx: &Context, snap: &SnapLayout) -> Self {
        Self {
            clock_offset_ns: ctx.clock().offset_ns as i64,
            snap: *snap,
            reset_reasons: ctx
                .reasons()
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
        }
    }

    /// The frame's JSON payload.
    pub fn write(&self, buf: &mut Vec<u8>) {
        let frame = ContextFrame {
            ty: "raw_context".to_string(),
            clock_offset_ns: self.clock_offset_ns,
            snap: self.snap.to_text(),
            reset_reasons: self
                .reset_reasons
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let _ = serde_json::to_writer(&mut *buf, &frame);
    }

    pub fn parse(text: &str) -> Result<Self, WireError> {
        let f: ContextFrame =
            serde_json::from_str(text).map_err(|e| WireError::Json(e.to_string()))?;
        let snap = SnapLayout::from_text(&f.snap).ok_or(WireError::Field("snap"))?;
        let mut reset_reasons = Vec::new();
        for (k, v) in f.reset_reasons {
            reset_reasons.push((k.parse().map_err(|_| WireError::Field("reset_reasons"))?, v));
        }
        reset_reasons.sort();
        Ok(Self {
            clock_offset_ns: f.clock_offset_ns,
            snap,
            reset_reasons,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_input_is_an_error() {
        let mut buf = Vec::new();
        push_frame(&mut buf, Tag::Record, &[1, 2, 3]);
        push_frame(&mut buf, Tag::Json, b"{}");
        let mut r = &buf[..];
        let mut p = Vec::new();
        assert_eq!(read_frame(&mut r, &mut p).unwrap(), Some(Tag::Record));
        assert_eq!(p, [1, 2, 3]);
        assert_eq!(read_frame(&mut r, &mut p).unwrap(), Some(Tag::Json));
        assert_eq!(p, b"{}");
        assert_eq!(read_frame(&mut r, &mut p).unwrap(), None);
        // Truncated payload, unknown tag.
        let mut r = &buf[..6];
        assert!(read_frame(&mut r, &mut p).is_err());
        let mut r = &[9u8, 0, 0, 0, 0][..];
        assert!(read_frame(&mut r, &mut p).is_err());
    }
}
