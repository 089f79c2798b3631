//! Which ScanRequest watch events trigger a reconcile: a new object, or a new spec (a new
//! `metadata.generation`); the operator's own status writes do not.
//!
//! kube's `predicate_filter(predicates::generation)` decides the same, but it only ever sees
//! applied objects, so it keeps the entry of a deleted object until its TTL (an hour by
//! default) has passed, up to twice over: one entry for every request created and deleted in
//! that time. [`Generations`] sees the watch events themselves and drops an entry on the
//! object's delete event, or at the next re-list when the delete happened while the watch was
//! down, so that it holds exactly the requests that exist.

use std::collections::{HashMap, HashSet};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use crate::api::ScanRequest;

/// The generation of each ScanRequest the watch reported, with its uid (a request deleted
/// and created again under the same name is new).
#[derive(Default)]
pub struct Generations {
    seen: HashMap<ObjectRef<ScanRequest>, Seen>,
    /// The objects of a re-list in progress: when it ends, the others are gone.
    relist: Option<HashSet<ObjectRef<ScanRequest>>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    uid: Option<String>,
    generation: Option<i64>,
}

/// What one watch event means for the controller.
#[derive(Debug)]
pub enum Change {
    /// New, or its spec changed: reconcile it.
    Spec(Box<ScanRequest>),
    /// These requests are gone (deleted, or missing from a re-list): forget their state.
    Gone(Vec<ObjectRef<ScanRequest>>),
    /// Nothing to do (a status write, the start of a re-list).
    Unchanged,
}

impl Generations {
    /// Records `event` and says what it changes.
    pub fn admit(&mut self, event: Event<ScanRequest>) -> Change {
        match event {
            Event::Init => {
                self.relist = Some(HashSet::new());
                Change::Unchanged
            }
            Event::InitApply(sr) => {
                let key = key(&sr);
                if let Some(relist) = self.relist.as_mut() {
                    relist.insert(key.clone());
                }
                self.apply(key, sr)
            }
            Event::InitDone => {
                let Some(listed) = self.relist.take() else {
                    return Change::Unchanged;
                };
                let gone: Vec<_> = self
                    .seen
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                for k in &gone {
                    self.seen.remove(k);
                }
                self.shrink();
                if gone.is_empty() {
                    Change::Unchanged
                } else {
                    Change::Gone(gone)
                }
            }
            Event::Apply(sr) => self.apply(key(&sr), sr),
            Event::Delete(sr) => {
                let key = key(&sr);
                // A delete of an older incarnation (same name, other uid) leaves the new one.
                if self
                    .seen
                    .get(&key)
                    .is_some_and(|s| s.uid != sr.metadata.uid)
                {
                    return Change::Unchanged;
                }
                self.seen.remove(&key);
                self.shrink();
                if let Some(relist) = self.relist.as_mut() {
                    relist.remove(&key);
                }
                Change::Gone(vec![key])
            }
        }
    }

    /// Requests on record.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn apply(&mut self, key: ObjectRef<ScanRequest>, sr: ScanRequest) -> Change {
        let now = Seen {
            uid: sr.metadata.uid.clone(),
            generation: sr.metadata.generation,
        };
        // No generation (never on a served custom resource): every event counts, as kube's
        // filter does when its predicate has no value.
        let changed = now.generation.is_none() || self.seen.get(&key) != Some(&now);
        self.seen.insert(key, now);
        if changed {
            Change::Spec(Box::new(sr))
        } else {
            Change::Unchanged
        }
    }

    /// A map never gives back its capacity by itself: after a burst of requests is deleted,
    /// hand the memory back once it is mostly empty.
    fn shrink(&mut self) {
        if self.seen.capacity() > 64 && self.seen.len() < self.seen.capacity() / 4 {
            self.seen.shrink_to(self.seen.len().saturating_mul(2));
        }
    }
}

/// The key of `sr`: its namespace and name only (the uid is in the value), so that a key
/// holds no more strings than it needs.
fn key(sr: &ScanRequest) -> ObjectRef<ScanRequest> {
    let key = ObjectRef::new(&sr.name_any());
    match sr.namespace() {
        Some(ns) => key.within(&ns),
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::tests::fixture;

    fn request(name: &str, uid: &str, generation: i64) -> ScanRequest {
        let mut sr = fixture("new.yaml");
        sr.metadata.name = Some(name.into());
        sr.metadata.namespace = Some("team".into());
        sr.metadata.uid = Some(uid.into());
        sr.metadata.generation = Some(generation);
        sr
    }

    fn reconciles(change: Change) -> bool {
        matches!(change, Change::Spec(_))
    }

    #[test]
    fn a_new_request_and_a_new_spec_reconcile_a_status_write_does_not() {
        let mut g = Generations::default();
        assert!(reconciles(g.admit(Event::Apply(request("a", "u1", 1)))));
        let mut status_write = request("a", "u1", 1);
        status_write.metadata.resource_version = Some("2".into());
        assert!(!reconciles(g.admit(Event::Apply(status_write))));
        assert!(reconciles(g.admit(Event::Apply(request("a", "u1", 2)))));
        // Deleted and created again under the same name: a new object.
        assert!(reconciles(g.admit(Event::Apply(request("a", "u2", 2)))));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn deleted_requests_leave_nothing_behind() {
        let mut g = Generations::default();
        for i in 0..1000 {
            g.admit(Event::Apply(request(
                &format!("sr-{i}"),
                &format!("u{i}"),
                1,
            )));
        }
        assert_eq!(g.len(), 1000);
        let grown = g.seen.capacity();
        for i in 0..1000 {
            let gone = g.admit(Event::Delete(request(
                &format!("sr-{i}"),
                &format!("u{i}"),
                1,
            )));
            assert!(
                matches!(&gone, Change::Gone(refs) if refs.len() == 1 && refs[0].name == format!("sr-{i}")),
                "{gone:?}"
            );
        }
        assert!(g.is_empty(), "{} entries of deleted requests", g.len());
        assert!(
            g.seen.capacity() < grown / 4,
            "capacity {} kept after the burst (was {grown})",
            g.seen.capacity()
        );
    }

    #[test]
    fn a_relist_drops_the_requests_deleted_while_the_watch_was_down() {
        let mut g = Generations::default();
        for name in ["a", "b", "c"] {
            g.admit(Event::Apply(request(name, name, 1)));
        }
        assert!(matches!(g.admit(Event::Init), Change::Unchanged));
        // "b" is unchanged: listed, not reconciled again.
        assert!(!reconciles(g.admit(Event::InitApply(request("b", "b", 1)))));
        let Change::Gone(mut gone) = g.admit(Event::InitDone) else {
            panic!("a and c are gone");
        };
        gone.sort_by(|x, y| x.name.cmp(&y.name));
        let names: Vec<_> = gone.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn the_delete_of_an_older_incarnation_keeps_the_new_one() {
        let mut g = Generations::default();
        g.admit(Event::Apply(request("a", "new", 1)));
        assert!(matches!(
            g.admit(Event::Delete(request("a", "old", 1))),
            Change::Unchanged
        ));
        assert_eq!(g.len(), 1);
        assert!(!reconciles(g.admit(Event::Apply(request("a", "new", 1)))));
    }
}
