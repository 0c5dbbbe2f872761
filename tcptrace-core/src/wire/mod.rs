//! The wire: every kind of line tcptrace writes and reads, in one place. Each kind has its
//! writer and its reader side by side (hot kinds — events, connection records — with a
//! hand-written writer, cold ones as one serde type for both directions), the first line of a
//! JSON stream carries the schema version, and `tests` round-trips every kind.
pub mod cgroup;
pub mod conn;
pub mod diagnosis;
pub mod event;
pub mod json;
pub mod namespace;
pub mod raw;
pub mod reader;
pub mod stream;
pub mod summary;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::{clock::parse_rfc3339, event::Event};
pub use cgroup::CgroupLine;
pub use conn::ConnLine;
pub use diagnosis::{DiagnosisLine, FindingLine};
pub use namespace::{InterfacesLine, NetnsLine, SampleLine, SysctlLine, SysctlReport};
pub use stream::{Content, LogLine, LostCause, LostLine, SCHEMA_VERSION, StreamHeader};
pub use summary::SummaryLine;

/// Longest JSON line a reader accepts: the largest lines (namespace samples, records with
/// several diagnoses) are a few kilobytes.
pub const MAX_LINE: usize = 1 << 20;

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("bad {0} value")]
    Field(&'static str),
    #[error("the stream's schema version {0} is newer than this tcptrace reads ({SCHEMA_VERSION})")]
    Schema(u32),
}

/// The cold line kinds, tagged by `"type"`: one type for writing and reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cold {
    Stream(StreamHeader),
    Lost(LostLine),
    Sysctl(SysctlLine),
    Interfaces(InterfacesLine),
    NetnsSample(SampleLine),
    Log(LogLine),
    SysctlReport(SysctlReport),
    Cgroup(CgroupLine),
    Summary(SummaryLine),
    Netns(NetnsLine),
}

/// Writes a cold line (without the trailing newline).
pub fn write_cold(buf: &mut Vec<u8>, line: &Cold) {
    // Writing into a Vec cannot fail, and every member serializes.
    let _ = serde_json::to_writer(&mut *buf, line);
}

/// The `"type"` of every cold line.
const COLD_TYPES: [&str; 10] = [
    "stream",
    "lost",
    "sysctl",
    "interfaces",
    "netns_sample",
    "log",
    "sysctl_report",
    "cgroup",
    "summary",
    "netns",
];

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    ty: String,
}

fn is_known(ty: &str) -> bool {
    event::TYPES.contains(&ty) || COLD_TYPES.contains(&ty)
}

/// What one line held.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Line {
    /// A kernel event or userspace fact, and the reset reason name it carried.
    Event {
        event: Event,
        reason: Option<(u32, String)>,
    },
    /// Any cold line.
    Cold(Cold),
    /// A line replay does not consume (`conn`, `diagnosis`, and types added later).
    Other,
}

/// One parsed line plus the wall-clock offset of the recording host when asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub line: Line,
    /// `time` minus `ts_ns`.
    pub clock_offset_ns: Option<i128>,
}

/// Parses one line. `want_clock` asks for the wall-clock offset (parsing `time` costs; the
/// caller needs it once). A stream header of a newer schema is an error.
pub fn parse_line(text: &str, want_clock: bool) -> Result<Parsed, WireError> {
    let bad = |e: serde_json::Error| WireError::Json(e.to_string());
    let f: event::Fields = match serde_json::from_str(text) {
        Ok(f) => f,
        // A kind this reader does not know may hold members of other shapes.
        Err(e) => match serde_json::from_str::<TypeOnly>(text) {
            Ok(t) if !is_known(&t.ty) => {
                return Ok(Parsed {
                    line: Line::Other,
                    clock_offset_ns: None,
                });
            }
            _ => return Err(bad(e)),
        },
    };
    let clock_offset_ns = match (want_clock, f.time, f.ts_ns) {
        (true, Some(t), Some(ts)) => parse_rfc3339(t).map(|unix| unix - ts as i128),
        _ => None,
    };
    let line = if event::TYPES.contains(&f.ty) {
        let (event, reason) = event::read(&f)?;
        Line::Event { event, reason }
    } else if COLD_TYPES.contains(&f.ty) {
        let cold: Cold = serde_json::from_str(text).map_err(bad)?;
        if let Cold::Stream(h) = &cold
            && h.schema > SCHEMA_VERSION
        {
            return Err(WireError::Schema(h.schema));
        }
        Line::Cold(cold)
    } else {
        Line::Other
    };
    Ok(Parsed {
        line,
        clock_offset_ns,
    })
}

/// Serializes a `Vec<(K, V)>` as a JSON object in its order, and reads one back.
pub(crate) mod ordered {
    use serde::{
        Deserialize, Deserializer, Serialize, Serializer,
        de::{MapAccess, Visitor},
        ser::SerializeMap,
    };
    use std::{fmt, marker::PhantomData};

    pub fn serialize<S, K, V>(v: &[(K, V)], s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, val) in v {
            m.serialize_entry(k, val)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<Vec<(K, V)>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
    {
        struct Pairs<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Pairs<K, V> {
            type Value = Vec<(K, V)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = a.next_entry()? {
                    out.push(pair);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Pairs(PhantomData))
    }
}
