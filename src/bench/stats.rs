//! Latency percentiles (exact, from the sorted samples) and medians over rounds.

use std::time::Duration;

/// Latency figures of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Latency {
    /// From per-call latencies in nanoseconds (sorted here). All zero when there are none.
    pub fn from_nanos(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&n| u128::from(n)).sum();
        let mean = (sum / samples.len() as u128) as u64;
        Latency {
            p50: Duration::from_nanos(percentile(samples, 50.0)),
            p90: Duration::from_nanos(percentile(samples, 90.0)),
            p99: Duration::from_nanos(percentile(samples, 99.0)),
            max: Duration::from_nanos(samples[samples.len() - 1]),
            mean: Duration::from_nanos(mean),
        }
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample with at least `p` %
/// of the samples at or below it. 0 for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of some figures (the mean of the middle two for an even count); `None` when
/// there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 50);
        assert_eq!(percentile(&sorted, 90.0), 90);
        assert_eq!(percentile(&sorted, 99.0), 99);
        assert_eq!(percentile(&sorted, 100.0), 100);
        assert_eq!(percentile(&sorted, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // 10 samples: p99 is the largest, p50 the fifth.
        let ten: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(percentile(&ten, 50.0), 50);
        assert_eq!(percentile(&ten, 99.0), 100);
        assert_eq!(percentile(&ten, 90.0), 90);
    }

    #[test]
    fn latency_sorts_its_samples() {
        let mut samples = vec![5_000, 1_000, 3_000, 2_000, 4_000];
        let l = Latency::from_nanos(&mut samples);
        assert_eq!(l.p50, Duration::from_micros(3));
        assert_eq!(l.p90, Duration::from_micros(5));
        assert_eq!(l.max, Duration::from_micros(5));
        assert_eq!(l.mean, Duration::from_micros(3));
        assert_eq!(Latency::from_nanos(&mut []), Latency::default());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }
}
