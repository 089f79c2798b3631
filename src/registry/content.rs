//! What a digest's content is (its media type and, for an image index, the children chosen
//! for a set of platforms), remembered in a bounded number. Content addressed by digest never
//! changes, so entries need no TTL; they are shared by every namespace, and the controller
//! consults them only after the namespace's own proof of access to that digest.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::index::Child;
use crate::api::ArtifactMimeType;

/// A digest in one repository of one registry, with the platform filter its children were
/// chosen by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentKey {
    registry: String,
    repository: String,
    digest: String,
    /// `spec.platforms`, sorted: the same set in another order is the same choice.
    platforms: Vec<String>,
}

impl ContentKey {
    pub fn new(registry: &str, repository: &str, digest: &str, platforms: &[String]) -> Self {
        let mut platforms: Vec<String> = platforms.iter().map(|p| p.to_ascii_lowercase()).collect();
        platforms.sort();
        platforms.dedup();
        Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            digest: digest.to_owned(),
            platforms,
        }
    }
}

/// What the registry served for a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub media_type: ArtifactMimeType,
    /// The children to scan, for an index; empty for an image manifest.
    pub children: Vec<Child>,
}

/// At most `capacity` entries; the oldest go first.
#[derive(Debug)]
pub struct ContentCache {
    capacity: usize,
    entries: HashMap<ContentKey, Arc<Content>>,
    order: VecDeque<ContentKey>,
}

impl ContentCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, key: &ContentKey) -> Option<Arc<Content>> {
        self.entries.get(key).cloned()
    }

    pub fn insert(&mut self, key: ContentKey, content: Arc<Content>) {
        if self.entries.insert(key.clone(), content).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize, platforms: &[&str]) -> ContentKey {
        let platforms: Vec<String> = platforms.iter().map(|p| (*p).to_owned()).collect();
        ContentKey::new(
            "r.example:5000",
            "team/app",
            &format!("sha256:{n:064}"),
            &platforms,
        )
    }

    fn manifest() -> Arc<Content> {
        Arc::new(Content {
            media_type: ArtifactMimeType::OciImageManifest,
            children: Vec::new(),
        })
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity_and_drops_the_oldest() {
        let mut cache = ContentCache::new(3);
        for n in 0..10 {
            cache.insert(key(n, &[]), manifest());
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key(0, &[])).is_none());
        assert!(cache.get(&key(9, &[])).is_some());
        // Re-inserting a present key neither grows the cache nor the eviction queue.
        for _ in 0..10 {
            cache.insert(key(9, &[]), manifest());
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.order.len(), 3);
    }

    #[test]
    fn a_platform_set_is_the_same_choice_in_any_order_or_case() {
        assert_eq!(
            key(1, &["linux/arm64", "Linux/AMD64"]),
            key(1, &["linux/amd64", "linux/arm64"])
        );
        assert_ne!(key(1, &["linux/amd64"]), key(1, &[]));
    }
}
