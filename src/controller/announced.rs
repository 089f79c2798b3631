//! What this process last announced about each ScanRequest (its policy verdict, its tag's
//! digest), so that a change is announced once.
//!
//! The announcements compare with the status in the watch cache, but a reconcile may run
//! before the cache holds the previous reconcile's status write: a Scanner's status change
//! or a timer can trigger it while the write's watch event is still on its way. Judged by
//! that stale status, the same verdict would look new and be announced again (a second
//! PolicyViolation, counted in the first one's series). What this process announced itself
//! is never stale; the cache is used only for what it did not announce (a first reconcile,
//! another leader before it).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::ScanRequest;

/// Entries kept at once; past it all are dropped and the cache is trusted again, as before.
pub const CAPACITY: usize = 100_000;

/// What an announcement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// The policy verdict: compliant or not.
    Policy,
    /// The digest a tag resolved to.
    Tag,
}

/// The last value announced per request and topic (a hash: only equality matters).
#[derive(Default)]
pub struct Announced {
    last: Mutex<HashMap<(ObjectRef<ScanRequest>, Topic), Said>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Said {
    /// A request deleted and created again under its name is another request.
    uid: Option<String>,
    value: u64,
}

impl Announced {
    /// Whether `value` is news about `topic` for `sr`: it differs from what this process last
    /// announced, or, when it announced nothing for this request, from `cached` (what the
    /// watch cache's status says). News is recorded as announced.
    pub fn is_news<V: Hash + ?Sized>(
        &self,
        sr: &ScanRequest,
        topic: Topic,
        value: &V,
        cached: Option<&V>,
    ) -> bool {
        let said = Said {
            uid: sr.uid(),
            value: hash(value),
        };
        let key = (ObjectRef::from(sr), topic);
        let mut last = self.lock();
        let known = match last.get(&key).filter(|s| s.uid == said.uid) {
            Some(before) => Some(before.value),
            None => cached.map(hash),
        };
        if known == Some(said.value) {
            return false;
        }
        if last.len() >= CAPACITY {
            last.clear();
        }
        last.insert(key, said);
        true
    }

    /// ScanRequest `object` is gone: nothing is kept for it.
    pub fn forget(&self, object: &ObjectRef<ScanRequest>) {
        let mut last = self.lock();
        last.remove(&(object.clone(), Topic::Policy));
        last.remove(&(object.clone(), Topic::Tag));
    }

    /// Keeps only the entries of requests `live` says still exist.
    pub fn retain(&self, live: impl Fn(&ObjectRef<ScanRequest>) -> bool) {
        let mut last = self.lock();
        last.retain(|(object, _), _| live(object));
        if last.capacity() > last.len().saturating_mul(4).max(64) {
            last.shrink_to_fit();
        }
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ObjectRef<ScanRequest>, Topic), Said>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn hash<V: Hash + ?Sized>(value: &V) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::tests::fixture;

    fn with_uid(uid: &str) -> ScanRequest {
        let mut sr = fixture("new.yaml");
        sr.metadata.uid = Some(uid.into());
        sr
    }

    #[test]
    fn a_verdict_is_announced_once_though_the_cache_still_shows_the_status_before_it() {
        let announced = Announced::default();
        let sr = with_uid("u1");
        // The first reconcile: the cache has no verdict yet.
        assert!(announced.is_news(&sr, Topic::Policy, &false, None));
        // The next one ran before the cache held that status: still no verdict in it.
        assert!(!announced.is_news(&sr, Topic::Policy, &false, None));
        // Once the cache catches up, nothing changes either.
        assert!(!announced.is_news(&sr, Topic::Policy, &false, Some(&false)));
    }

    #[test]
    fn a_changed_verdict_is_news_and_so_is_a_change_back() {
        let announced = Announced::default();
        let sr = with_uid("u1");
        assert!(announced.is_news(&sr, Topic::Policy, &false, None));
        assert!(announced.is_news(&sr, Topic::Policy, &true, Some(&false)));
        assert!(announced.is_news(&sr, Topic::Policy, &false, Some(&true)));
        assert!(!announced.is_news(&sr, Topic::Policy, &false, Some(&true)));
    }

    #[test]
    fn without_an_announcement_of_its_own_the_process_trusts_the_cache() {
        let announced = Announced::default();
        let sr = with_uid("u1");
        // Another leader announced it and wrote the status.
        assert!(!announced.is_news(&sr, Topic::Policy, &true, Some(&true)));
        assert!(announced.is_news(&sr, Topic::Policy, &false, Some(&true)));
    }

    #[test]
    fn topics_and_requests_are_apart_and_a_recreated_request_is_new() {
        let announced = Announced::default();
        let sr = with_uid("u1");
        let tag = ("v1", "sha256:aa");
        assert!(announced.is_news(&sr, Topic::Tag, &tag, None));
        assert!(announced.is_news(&sr, Topic::Policy, &true, None));
        assert!(!announced.is_news(&sr, Topic::Tag, &tag, None));
        assert!(announced.is_news(&sr, Topic::Tag, &("v2", "sha256:aa"), None));
        let again = with_uid("u2");
        assert!(announced.is_news(&again, Topic::Tag, &tag, None));
    }

    #[test]
    fn a_deleted_request_leaves_nothing_behind() {
        let announced = Announced::default();
        let sr = with_uid("u1");
        assert!(announced.is_news(&sr, Topic::Tag, &("v1", "sha256:aa"), None));
        assert!(announced.is_news(&sr, Topic::Policy, &true, None));
        announced.forget(&ObjectRef::from(&sr));
        assert!(announced.is_empty());
        assert!(announced.is_news(&sr, Topic::Policy, &true, None));
        announced.retain(|_| false);
        assert!(announced.is_empty());
    }
}
