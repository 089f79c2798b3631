//! Successful access proofs, remembered for a bounded time and in a bounded number.
//!
//! A proof holds for one namespace, registry, repository, digest and one version of the
//! credentials Secret: a rotated or deleted Secret changes the key, so the next request proves
//! again. Pure: the caller passes the clock, so tests need no sleeping.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What a proof was made for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProofKey {
    pub namespace: String,
    /// `host[:port]` of the registry.
    pub registry: String,
    pub repository: String,
    pub digest: String,
    /// uid and resourceVersion of the credentials Secret; `None` for an anonymous proof.
    pub secret: Option<SecretVersion>,
}

/// One version of a Secret: a new uid (recreated) or resourceVersion (edited) is new.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretVersion {
    pub uid: String,
    pub resource_version: String,
}

/// A bounded, time-limited set of proofs.
#[derive(Debug)]
pub struct ProofCache {
    ttl: Duration,
    capacity: usize,
    proven_at: HashMap<ProofKey, Instant>,
    /// Keys in insertion order, for eviction; an entry whose instant differs from
    /// `proven_at` is stale (the key was proven again later) and is skipped.
    order: VecDeque<(ProofKey, Instant)>,
}

impl ProofCache {
    /// A cache of at most `capacity` proofs (at least one), each valid for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            proven_at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `key` was proven less than the TTL before `now`.
    pub fn is_proven(&self, key: &ProofKey, now: Instant) -> bool {
        self.proven_at
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    /// Records a successful proof at `now`, evicting expired entries and then the oldest
    /// ones to stay within the capacity.
    pub fn insert(&mut self, key: ProofKey, now: Instant) {
        self.proven_at.insert(key.clone(), now);
        self.order.push_back((key, now));
        self.evict(now);
    }

    /// Forgets the proof for `key` (e.g. after the registry denied a later pull).
    pub fn remove(&mut self, key: &ProofKey) {
        self.proven_at.remove(key);
    }

    /// Forgets every proof of `namespace` (the namespace or its Secret was deleted).
    pub fn forget_namespace(&mut self, namespace: &str) {
        self.proven_at.retain(|k, _| k.namespace != namespace);
        self.order.retain(|(k, _)| k.namespace != namespace);
    }

    /// Number of live entries (some may have expired but not been evicted yet).
    pub fn len(&self) -> usize {
        self.proven_at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.proven_at.is_empty()
    }

    fn evict(&mut self, now: Instant) {
        // Entries are in insertion order, so expired ones are at the front.
        while let Some((key, at)) = self.order.front() {
            let stale = self.proven_at.get(key) != Some(at);
            let expired = now.saturating_duration_since(*at) >= self.ttl;
            let over = self.proven_at.len() > self.capacity;
            if !(stale || expired || over) {
                break;
            }
            if !stale {
                self.proven_at.remove(key);
            }
            self.order.pop_front();
        }
        // Stale entries behind the front can pile up when one key is proven again and again.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let proven_at = &self.proven_at;
            self.order.retain(|(k, at)| proven_at.get(k) == Some(at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(namespace: &str, digest: &str) -> ProofKey {
        ProofKey {
            namespace: namespace.into(),
            registry: "reg.example".into(),
            repository: "team/app".into(),
            digest: digest.into(),
            secret: Some(SecretVersion {
                uid: "uid-1".into(),
                resource_version: "10".into(),
            }),
        }
    }

    #[test]
    fn a_proof_expires_after_the_ttl() {
        let t0 = Instant::now();
        let mut cache = ProofCache::new(10, Duration::from_secs(60));
        cache.insert(key("a", "d1"), t0);
        assert!(cache.is_proven(&key("a", "d1"), t0 + Duration::from_secs(59)));
        assert!(!cache.is_proven(&key("a", "d1"), t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_proof_holds_only_for_its_namespace_registry_and_secret_version() {
        let t0 = Instant::now();
        let mut cache = ProofCache::new(10, Duration::from_secs(60));
        cache.insert(key("a", "d1"), t0);
        assert!(!cache.is_proven(&key("b", "d1"), t0));
        let mut other_registry = key("a", "d1");
        other_registry.registry = "evil.example".into();
        assert!(!cache.is_proven(&other_registry, t0));
        let mut rotated = key("a", "d1");
        rotated.secret = Some(SecretVersion {
            uid: "uid-1".into(),
            resource_version: "11".into(),
        });
        assert!(!cache.is_proven(&rotated, t0));
        let mut anonymous = key("a", "d1");
        anonymous.secret = None;
        assert!(!cache.is_proven(&anonymous, t0));
    }

    #[test]
    fn forgetting_a_namespace_drops_only_its_proofs() {
        let t0 = Instant::now();
        let mut cache = ProofCache::new(10, Duration::from_secs(60));
        cache.insert(key("a", "d1"), t0);
        cache.insert(key("a", "d2"), t0);
        cache.insert(key("b", "d1"), t0);
        cache.forget_namespace("a");
        assert!(!cache.is_proven(&key("a", "d1"), t0));
        assert!(!cache.is_proven(&key("a", "d2"), t0));
        assert!(cache.is_proven(&key("b", "d1"), t0));
        cache.remove(&key("b", "d1"));
        assert!(cache.is_empty());
    }

    #[test]
    fn the_oldest_proof_is_evicted_at_capacity() {
        let t0 = Instant::now();
        let mut cache = ProofCache::new(2, Duration::from_secs(60));
        cache.insert(key("a", "d1"), t0);
        cache.insert(key("a", "d2"), t0 + Duration::from_secs(1));
        // d1 proven again: it is now the newest.
        cache.insert(key("a", "d1"), t0 + Duration::from_secs(2));
        cache.insert(key("a", "d3"), t0 + Duration::from_secs(3));
        let now = t0 + Duration::from_secs(3);
        assert!(cache.is_proven(&key("a", "d1"), now));
        assert!(!cache.is_proven(&key("a", "d2"), now));
        assert!(cache.is_proven(&key("a", "d3"), now));
        assert_eq!(cache.len(), 2);
    }

    proptest! {
        #[test]
        fn the_cache_never_exceeds_its_capacity(
            ops in proptest::collection::vec((0u8..3, 0u8..20, 0u64..200), 1..300),
            capacity in 1usize..8,
        ) {
            let t0 = Instant::now();
            let mut cache = ProofCache::new(capacity, Duration::from_secs(50));
            let mut now = t0;
            for (ns, digest, step) in ops {
                now += Duration::from_secs(step % 7);
                cache.insert(key(&ns.to_string(), &digest.to_string()), now);
                prop_assert!(cache.len() <= capacity);
                prop_assert!(cache.order.len() <= capacity * 2 + 1);
                prop_assert!(cache.is_proven(&key(&ns.to_string(), &digest.to_string()), now));
            }
        }
    }
}
