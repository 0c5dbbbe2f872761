//! Reads a recorded stream — JSON lines or a binary recording, told apart by the first bytes —
//! item by item, with bounded memory: a line longer than [`MAX_LINE`] or a frame longer than
//! the frame limit is an error, never an allocation. The damage that ends a stream (a cut-off
//! last line or frame, a bad line) is an error naming where it is, after every complete item
//! before it was handed out. `replay` and the fuzz target drive it.
use std::io::{self, BufRead};

use super::{
    MAX_LINE, Parsed, parse_line,
    raw::{self, RawContext, Tag, read_frame},
};
use crate::{decode::decode, event::Event, snapshot::SnapLayout};

/// Why reading stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Version(String),
    #[error("{line}: the stream is truncated: its last line is incomplete")]
    TruncatedLine { line: u64 },
    #[error("{line}: a line longer than {MAX_LINE} bytes: not a recording")]
    LongLine { line: u64 },
    #[error("{line}: {what}")]
    BadLine { line: u64, what: String },
    #[error("recording is truncated at frame {frame}")]
    TruncatedFrame { frame: u64 },
    #[error("frame {frame}: {what}")]
    BadFrame { frame: u64, what: String },
}

impl ReadError {
    /// Whether the stream is in JSON lines (errors are then `FILE:LINE: …`).
    pub fn at_line(&self) -> bool {
        matches!(
            self,
            Self::TruncatedLine { .. } | Self::LongLine { .. } | Self::BadLine { .. }
        )
    }
}

/// One item of a stream.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Item {
    /// A JSON line (of either kind of stream).
    Parsed(Parsed),
    /// A kernel record of a binary recording, decoded.
    Record(Event),
    /// A binary recording's context (before its first record).
    Context(RawContext),
}

// One per reader: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Json,
    Raw { layout: Option<SnapLayout> },
}

pub struct Reader<R> {
    inner: R,
    kind: Kind,
    /// Lines or frames read so far.
    n: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    /// Looks at the first bytes to tell a binary recording from JSON lines.
    pub fn new(mut inner: R) -> Result<Self, ReadError> {
        let head = inner.fill_buf()?;
        let kind = match raw::is_recording(head) {
            Ok(true) => {
                inner.consume(raw::MAGIC.len());
                Kind::Raw { layout: None }
            }
            Ok(false) => Kind::Json,
            Err(e) => return Err(ReadError::Version(e)),
        };
        Ok(Self {
            inner,
            kind,
            n: 0,
            buf: Vec::new(),
        })
    }

    /// Where the last item came from: `:LINE` of JSON lines, ` frame N` of a recording.
    pub fn position(&self) -> String {
        match self.kind {
            Kind::Json => format!(":{}", self.n),
            Kind::Raw { .. } => format!(": frame {}", self.n),
        }
    }

    /// The next item; `Ok(None)` at the clean end. `want_clock` asks JSON lines for their
    /// wall-clock offset (see [`parse_line`]).
    pub fn next_item(&mut self, want_clock: bool) -> Result<Option<Item>, ReadError> {
        match self.kind {
            Kind::Json => self.next_line(want_clock),
            Kind::Raw { .. } => self.next_frame(want_clock),
        }
    }

    fn next_line(&mut self, want_clock: bool) -> Result<Option<Item>, ReadError> {
        loop {
            let line = self.n + 1;
            let complete = match bounded_line(&mut self.inner, &mut self.buf)? {
                Some(c) => c,
                None if self.buf.len() > MAX_LINE => return Err(ReadError::LongLine { line }),
                None => return Ok(None),
            };
            self.n = line;
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t.trim(),
                Err(_) if !complete => return Err(ReadError::TruncatedLine { line }),
                Err(_) => {
                    return Err(ReadError::BadLine {
                        line,
                        what: "not UTF-8".into(),
                    });
                }
            };
            if text.is_empty() {
                continue;
            }
            return match parse_line(text, want_clock) {
                Ok(p) => Ok(Some(Item::Parsed(p))),
                Err(_) if !complete => Err(ReadError::TruncatedLine { line }),
                Err(e) => Err(ReadError::BadLine {
                    line,
                    what: e.to_string(),
                }),
            };
        }
    }

    fn next_frame(&mut self, want_clock: bool) -> Result<Option<Item>, ReadError> {
        let frame = self.n + 1;
        let tag = match read_frame(&mut self.inner, &mut self.buf) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(ReadError::TruncatedFrame { frame });
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(ReadError::BadFrame {
                    frame,
                    what: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.n = frame;
        let bad = |what: String| ReadError::BadFrame { frame, what };
        let Kind::Raw { layout } = &mut self.kind else {
            unreachable!("frames are read from binary recordings only");
        };
        match tag {
            Tag::Record => {
                let snap = layout
                    .as_ref()
                    .ok_or_else(|| bad("a kernel record before the recording's context".into()))?;
                let ev = decode(&self.buf, snap).map_err(|e| bad(e.to_string()))?;
                Ok(Some(Item::Record(ev)))
            }
            Tag::Json => {
                let text = std::str::from_utf8(&self.buf).map_err(|e| bad(e.to_string()))?;
                let p = parse_line(text, want_clock).map_err(|e| bad(e.to_string()))?;
                Ok(Some(Item::Parsed(p)))
            }
            Tag::Context => {
                let text = std::str::from_utf8(&self.buf).map_err(|e| bad(e.to_string()))?;
                let ctx = RawContext::parse(text).map_err(|e| bad(e.to_string()))?;
                *layout = Some(ctx.snap);
                Ok(Some(Item::Context(ctx)))
            }
        }
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes into `buf` (without its newline):
/// `Some(true)` for a whole line, `Some(false)` for a last line without a newline, `None` at
/// the end — or, with `buf` over the limit, at a line too long to keep.
fn bounded_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    buf.clear();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok((!buf.is_empty()).then_some(false));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > MAX_LINE {
            buf.resize(MAX_LINE + 1, 0);
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..take]);
        reader.consume(take + usize::from(done));
        if done {
            return Ok(Some(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> (usize, Option<ReadError>) {
        let mut r = match Reader::new(bytes) {
            Ok(r) => r,
            Err(e) => return (0, Some(e)),
        };
        let mut n = 0;
        loop {
            match r.next_item(false) {
                Ok(Some(_)) => n += 1,
                Ok(None) => return (n, None),
                Err(e) => return (n, Some(e)),
            }
        }
    }

    const FIXTURE: &str = include_str!("../../tests/fixtures/netns_scenarios.jsonl");

    #[test]
    fn reads_every_complete_item_then_names_the_damage() {
        let lines = FIXTURE.lines().count();
        assert_eq!(all(FIXTURE.as_bytes()).0, lines);
        let (n, err) = all(&FIXTURE.as_bytes()[..FIXTURE.len() - 50]);
        assert_eq!(n, lines - 1);
        assert!(matches!(err, Some(ReadError::TruncatedLine { line }) if line == lines as u64));
        let mut long = vec![b'{'; MAX_LINE + 10];
        long.push(b'\n');
        assert!(matches!(
            all(&long).1,
            Some(ReadError::LongLine { line: 1 })
        ));
        let (n, err) = all(b"{\"type\":\"lost\",\"ts_ns\":1,\"count\":1}\nnot json\n");
        assert_eq!(n, 1);
        assert!(matches!(err, Some(ReadError::BadLine { line: 2, .. })));
    }

    #[test]
    fn raw_frames_and_their_damage() {
        let mut raw = raw::MAGIC.to_vec();
        for l in FIXTURE.lines() {
            raw::push_frame(&mut raw, Tag::Json, l.as_bytes());
        }
        let frames = FIXTURE.lines().count();
        assert_eq!(all(&raw).0, frames);
        let (n, err) = all(&raw[..raw.len() - 3]);
        assert_eq!(n, frames - 1);
        assert!(matches!(err, Some(ReadError::TruncatedFrame { frame }) if frame == frames as u64));
        let mut early = raw::MAGIC.to_vec();
        raw::push_frame(&mut early, Tag::Record, &[0; 96]);
        assert!(matches!(
            all(&early).1,
            Some(ReadError::BadFrame { frame: 1, .. })
        ));
        assert!(matches!(
            all(b"tcptrace-raw\0\0\0\x09").1,
            Some(ReadError::Version(_))
        ));
    }
}
