//! Time arithmetic: maps CLOCK_MONOTONIC event stamps to wall-clock time and formats RFC 3339.
use std::cell::Cell;

/// Offset between CLOCK_REALTIME and CLOCK_MONOTONIC, sampled once by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WallClock {
    /// `realtime_ns - monotonic_ns` at sampling time.
    pub offset_ns: i128,
}

impl WallClock {
    /// From one pair of clock readings taken back to back.
    pub fn from_samples(realtime_ns: i128, monotonic_ns: i128) -> Self {
        Self {
            offset_ns: realtime_ns - monotonic_ns,
        }
    }

    /// Unix time in nanoseconds of a monotonic stamp.
    pub fn unix_ns(&self, monotonic_ns: u64) -> i128 {
        monotonic_ns as i128 + self.offset_ns
    }
}

/// Civil date (year, month 1-12, day 1-31) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Eras of 400 years (146097 days) starting at 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (the inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses what [`write_rfc3339_us`] writes (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`) to Unix ns.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let rest = s.get(19..)?.strip_suffix('Z')?;
    let frac_ns = match rest.strip_prefix('.') {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) => {
            f.parse::<i128>().ok()? * 10i128.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
        None if rest.is_empty() => 0,
        None => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec);
    Some(i128::from(secs) * 1_000_000_000 + frac_ns)
}

/// Seconds and microseconds of a Unix time in nanoseconds, in 64-bit arithmetic (128-bit
/// division is slow): good until the year 2262.
fn split_us(unix_ns: i128) -> (i64, u32) {
    let us = (unix_ns.clamp(i64::MIN as i128, i64::MAX as i128) as i64).div_euclid(1000);
    (us.div_euclid(1_000_000), us.rem_euclid(1_000_000) as u32)
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second.
fn date_time(secs: i64) -> [u8; 19] {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    let mut out = *b"0000-00-00T00:00:00";
    for (at, v, width) in [
        (0, y.clamp(0, 9999) as u32, 4),
        (5, mo, 2),
        (8, d, 2),
        (11, sod / 3600, 2),
        (14, sod / 60 % 60, 2),
        (17, sod % 60, 2),
    ] {
        put_digits(&mut out[at..at + width], v);
    }
    out
}

/// Writes `v` into `slot` as zero-padded decimal digits (the low ones if it is too long).
fn put_digits(slot: &mut [u8], v: u32) {
    let mut n = v;
    for b in slot.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Formats record times as RFC 3339 UTC with microseconds (`2026-11-24T10:03:07.123456Z`),
/// remembering the last second's date and time: records come in time order, so most of them
/// share it and only their microseconds are formatted.
#[derive(Debug, Default)]
pub struct Rfc3339Writer {
    last: Cell<Option<(i64, [u8; 19])>>,
}

impl Rfc3339Writer {
    /// Appends `unix_ns`.
    pub fn write(&self, out: &mut Vec<u8>, unix_ns: i128) {
        let (secs, micros) = split_us(unix_ns);
        let prefix = match self.last.get() {
            Some((s, p)) if s == secs => p,
            _ => {
                let p = date_time(secs);
                self.last.set(Some((secs, p)));
                p
            }
        };
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        text[..19].copy_from_slice(&prefix);
        put_digits(&mut text[20..26], micros);
        out.extend_from_slice(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_second_matches_a_fresh_writer() {
        let w = Rfc3339Writer::default();
        for ns in [
            1_764_000_000_123_456_000i128,
            1_764_000_000_999_999_000,
            1_764_000_001_000_001_000,
            951_782_400_000_001_000,
        ] {
            let mut a = Vec::new();
            w.write(&mut a, ns);
            assert_eq!(String::from_utf8(a).unwrap(), fmt(ns));
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        for ns in [0i128, 1_764_000_000_123_456_000, 951_782_400_000_001_000] {
            let text = fmt(ns);
            assert_eq!(parse_rfc3339(&text), Some(ns), "{text}");
        }
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    /// Through a fresh writer: no cached second.
    fn fmt(ns: i128) -> String {
        let mut v = Vec::new();
        Rfc3339Writer::default().write(&mut v, ns);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29T12:34:56.789012Z (leap day)
        assert_eq!(fmt(951_827_696_789_012_345), "2000-02-29T12:34:56.789012Z");
        // 2026-11-24T00:00:00Z
        assert_eq!(
            fmt(1_795_478_400_000_000_000),
            "2026-11-24T00:00:00.000000Z"
        );
        assert_eq!(fmt(-1_000), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn wall_clock_offsets() {
        let c = WallClock::from_samples(1_000_000_000_000, 5_000);
        assert_eq!(c.unix_ns(6_000), 1_000_000_001_000);
    }
}
