//! A log-bucketed histogram of nanosecond durations for percentiles in bounded memory: each
//! power of two is cut into [`SUB_BUCKETS`] equal buckets, so a bucket spans at most 1/32 of
//! its lower bound and its midpoint is within [`RELATIVE_ERROR`] (1/64, 1.6 %) of any value
//! in it. Values below 32 ns are exact. Buckets are kept sparse (only those that were hit),
//! at most [`MAX_BUCKETS`] of them whatever the number of samples.
/// Buckets per power of two.
pub const SUB_BUCKETS: u64 = 32;
const SUB_BITS: u32 = 5;
/// Largest possible number of buckets (all of `u64`).
pub const MAX_BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB_BUCKETS as usize;
/// Bound on |estimate − true percentile| / true percentile.
pub const RELATIVE_ERROR: f64 = 1.0 / 64.0;

/// Sparse counts by bucket, sorted by bucket index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<(u16, u32)>,
    count: u64,
    min: u64,
    max: u64,
}

/// Which bucket a value falls in.
fn index(v: u64) -> u16 {
    if v < SUB_BUCKETS {
        return v as u16;
    }
    let exp = 63 - v.leading_zeros(); // ≥ SUB_BITS
    let shift = exp - SUB_BITS;
    let mantissa = (v >> shift) & (SUB_BUCKETS - 1);
    ((u64::from(shift) + 1) * SUB_BUCKETS + mantissa) as u16
}

/// The values bucket `i` holds: `[lo, hi]`.
fn bounds(i: u16) -> (u64, u64) {
    let i = u64::from(i);
    if i < SUB_BUCKETS {
        return (i, i);
    }
    let shift = i / SUB_BUCKETS - 1;
    let mantissa = i % SUB_BUCKETS;
    let lo = (SUB_BUCKETS + mantissa) << shift;
    let width = 1u64 << shift;
    (lo, lo.saturating_add(width - 1))
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        let i = index(v);
        match self.buckets.binary_search_by_key(&i, |(b, _)| *b) {
            Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(1),
            Err(at) => self.buckets.insert(at, (i, 1)),
        }
        if self.count == 0 {
            (self.min, self.max) = (v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        for &(i, n) in &other.buckets {
            match self.buckets.binary_search_by_key(&i, |(b, _)| *b) {
                Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(n),
                Err(at) => self.buckets.insert(at, (i, n)),
            }
        }
        if self.count == 0 {
            (self.min, self.max) = (other.min, other.max);
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count += other.count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Buckets in use (memory is this times 8 bytes).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The `q`-quantile (0 < q ≤ 1) by nearest rank: an estimate of the smallest sample with
    /// at least `q` of all samples at or below it, within [`RELATIVE_ERROR`] of it. `None`
    /// without samples.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        // The extremes are known exactly.
        if rank == 1 {
            return Some(self.min);
        }
        if rank == self.count {
            return Some(self.max);
        }
        let mut seen = 0u64;
        for &(i, n) in &self.buckets {
            seen += u64::from(n);
            if seen >= rank {
                let (lo, hi) = bounds(i);
                let mid = lo + (hi - lo) / 2;
                // The extremes are known exactly; no estimate lies outside them.
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact nearest-rank quantile of `v`.
    fn exact(v: &mut [u64], q: f64) -> u64 {
        v.sort_unstable();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    #[test]
    fn buckets_tile_the_line() {
        let mut prev_hi = None;
        for i in 0..(MAX_BUCKETS as u16) {
            let (lo, hi) = bounds(i);
            assert!(lo <= hi, "{i}");
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "bucket {i} does not follow the one before");
            }
            assert_eq!(index(lo), i);
            assert_eq!(index(hi), i);
            // Half a bucket is within the stated error of every value in it.
            assert!((hi - lo) as f64 / 2.0 <= lo as f64 * RELATIVE_ERROR, "{i}");
            prev_hi = Some(hi);
        }
        assert_eq!(prev_hi, Some(u64::MAX));
    }

    #[test]
    fn percentiles_within_the_stated_error() {
        // A deterministic spread over nine orders of magnitude (xorshift).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values = Vec::new();
        let mut h = Histogram::default();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = 1_000 + (x % 1_000_000_000) / (1 + (x >> 50) % 1000);
            values.push(v);
            h.record(v);
        }
        for q in [0.01, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let truth = exact(&mut values, q);
            let est = h.quantile(q).unwrap();
            let err = (est as f64 - truth as f64).abs() / truth as f64;
            assert!(err <= RELATIVE_ERROR, "q={q}: {est} vs {truth} ({err})");
        }
        assert_eq!(h.count(), 20_000);
        assert!(h.buckets() <= MAX_BUCKETS);
    }

    #[test]
    fn small_sets_and_merges() {
        let mut a = Histogram::default();
        assert_eq!(a.quantile(0.5), None);
        a.record(280_000);
        assert_eq!(a.quantile(0.5), Some(280_000), "one sample is exact");
        assert_eq!(a.quantile(0.99), Some(280_000));
        let mut b = Histogram::default();
        for v in [3_100_000_000, 530_000, 420_000] {
            b.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 4);
        // Ranks 2 (p50 of 4) and 4 (p99), by nearest rank.
        let p50 = a.quantile(0.5).unwrap() as f64;
        assert!(
            (p50 - 420_000.0).abs() <= 420_000.0 * RELATIVE_ERROR,
            "{p50}"
        );
        assert_eq!(
            a.quantile(0.99),
            Some(3_100_000_000),
            "the maximum is exact"
        );
        for v in 0..32 {
            let mut e = Histogram::default();
            e.record(v);
            e.record(v);
            assert_eq!(e.quantile(0.5), Some(v));
        }
    }

    #[test]
    fn memory_is_bounded_by_buckets_not_samples() {
        let mut h = Histogram::default();
        for v in 0..200_000u64 {
            h.record(v * 7919 % 3_000_000);
        }
        // 2^22 > 3e6: values below it fall in at most (22 - 5 + 1) * 32 buckets.
        assert!(h.buckets() <= 18 * 32, "{}", h.buckets());
    }
}
