//! Per-namespace rate limit of forced rescans (`spec.rescanToken` changes): a token bucket per
//! namespace, so that one team changing tokens in a loop cannot keep every Scanner busy.
//!
//! The buckets live in the leader's memory (only the leader reconciles; a new leader starts
//! with full buckets). A full bucket is the same as none, so full buckets are dropped: the map
//! holds only namespaces that rescanned recently, and never more than [`MAX_NAMESPACES`].
//! Past that (more namespaces rescanning within an hour), the fullest half is dropped: those
//! namespaces get a fresh burst, the only cost of the bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Namespaces tracked at once.
pub const MAX_NAMESPACES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Forced rescans per namespace: `per_hour` on average, a burst of a tenth of that (at least 1).
#[derive(Debug)]
pub struct RescanLimiter {
    per_sec: f64,
    burst: f64,
    capacity: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RescanLimiter {
    pub fn new(per_hour: u32) -> Self {
        Self::with_capacity(per_hour, MAX_NAMESPACES)
    }

    fn with_capacity(per_hour: u32, capacity: usize) -> Self {
        let per_hour = f64::from(per_hour.max(1));
        Self {
            per_sec: per_hour / 3600.0,
            burst: (per_hour / 10.0).floor().max(1.0),
            capacity: capacity.max(2),
            buckets: Mutex::default(),
        }
    }

    /// The burst: rescans a namespace may start at once.
    pub fn burst(&self) -> u32 {
        // `burst` is a whole number between 1 and 10,000.
        self.burst as u32
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_sec).min(self.burst)
    }

    /// Takes one rescan of `namespace` at `now`: `Ok` when the budget allows it, otherwise
    /// `Err(wait)`, how long until it does.
    pub fn take(&self, namespace: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let tokens = buckets
            .get(namespace)
            .map_or(self.burst, |b| self.refilled(*b, now));
        if tokens < 1.0 {
            let wait = (1.0 - tokens) / self.per_sec;
            // At least a second, so that a rounding error can never requeue in a hot loop.
            return Err(Duration::try_from_secs_f64(wait)
                .unwrap_or(Duration::from_secs(3600))
                .max(Duration::from_secs(1)));
        }
        buckets.insert(
            namespace.to_owned(),
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
        );
        if buckets.len() > self.capacity {
            self.prune(&mut buckets, now);
        }
        Ok(())
    }

    /// Drops full buckets, then, while more than half the capacity is left, the fullest ones
    /// (amortised: a prune makes room for at least half the capacity).
    fn prune(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        buckets.retain(|_, b| self.refilled(*b, now) < self.burst);
        let keep = self.capacity / 2;
        if buckets.len() > keep {
            let mut by_tokens: Vec<(f64, String)> = buckets
                .iter()
                .map(|(ns, b)| (self.refilled(*b, now), ns.clone()))
                .collect();
            by_tokens.sort_by(|a, b| b.0.total_cmp(&a.0));
            let surplus = by_tokens.len().saturating_sub(keep);
            for (_, ns) in by_tokens.into_iter().take(surplus) {
                buckets.remove(&ns);
            }
        }
    }

    /// Namespaces with a bucket on record.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_gets_its_burst_then_one_rescan_per_interval_and_others_are_unaffected() {
        let limiter = RescanLimiter::new(60);
        assert_eq!(limiter.burst(), 6);
        let t0 = Instant::now();
        for _ in 0..6 {
            assert_eq!(limiter.take("team-a", t0), Ok(()));
        }
        let wait = limiter.take("team-a", t0).unwrap_err();
        assert!(
            (Duration::from_secs(59)..=Duration::from_secs(60)).contains(&wait),
            "{wait:?}"
        );
        assert_eq!(limiter.take("team-b", t0), Ok(()), "per namespace");
        // A minute later exactly one more is allowed.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(limiter.take("team-a", t1), Ok(()));
        assert!(limiter.take("team-a", t1).is_err());
    }

    #[test]
    fn a_refused_rescan_costs_nothing_and_the_wait_is_never_below_a_second() {
        let limiter = RescanLimiter::new(100_000);
        let t0 = Instant::now();
        for _ in 0..limiter.burst() {
            limiter.take("ns", t0).unwrap();
        }
        for _ in 0..100 {
            let wait = limiter.take("ns", t0).unwrap_err();
            assert!(wait >= Duration::from_secs(1), "{wait:?}");
        }
        assert_eq!(limiter.take("ns", t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn buckets_of_namespaces_that_stopped_rescanning_are_dropped_and_the_map_stays_bounded() {
        let limiter = RescanLimiter::with_capacity(3600, 10);
        let t0 = Instant::now();
        for i in 0..100 {
            limiter.take(&format!("ns-{i}"), t0).unwrap();
            assert!(limiter.len() <= 10, "{}", limiter.len());
        }
        assert_eq!(RescanLimiter::new(1).capacity, MAX_NAMESPACES);
        // An hour later every bucket is full again: the next prune drops them all.
        let limiter = RescanLimiter::with_capacity(3600, 10);
        for i in 0..8 {
            limiter.take(&format!("old-{i}"), t0).unwrap();
        }
        let later = t0 + Duration::from_secs(3600);
        for i in 0..3 {
            limiter.take(&format!("new-{i}"), later).unwrap();
        }
        assert_eq!(
            limiter.len(),
            3,
            "only the namespaces that rescanned within the hour"
        );
    }
}
