//! Kubernetes Events about ScanRequests (`kubectl describe sr`, `kubectl events`). An Event
//! that repeats within [`SERIES_WINDOW`] (same object, type, reason and action) is counted in
//! the first one's series instead of being created again, as client-go's recorder does.
//!
//! kube's `Recorder` merges repeats the same way, but its cache holds every Event it published
//! in the last six minutes, whole, and prunes it only when it publishes again, never when the
//! object goes away: after a burst of requests is deleted, their Events stay in memory. Here a
//! series keeps only what a repeat needs (the Event's name and count), the series of a deleted
//! request go with it ([`Recorder::forget`]), those of requests gone unnoticed (an Event
//! published just after the delete, a delete missed while the watch was down) and expired ones
//! go at each retention cycle ([`Recorder::retain`]), and there are never more than
//! [`MAX_SERIES`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

use crate::api::ScanRequest;

/// How long a repeat is counted in the first Event's series: client-go's and kube's 6 minutes.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Series remembered at once; past it the oldest go (their next repeat is a new Event).
pub const MAX_SERIES: usize = 10_000;

/// One Event to publish about a ScanRequest.
#[derive(Debug, Clone)]
pub struct Event {
    pub type_: EventType,
    /// UpperCamelCase, e.g. `ReportStored`.
    pub reason: String,
    /// What the Event is about, e.g. `Scan application/...`; at most 128 bytes.
    pub action: String,
    pub note: String,
}

/// Publishes Events of ScanRequests, merging repeats into series.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<SeriesCache>,
}

impl Recorder {
    /// Events reported by `controller` (`reportingController`), from `instance`
    /// (`reportingInstance`).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            series: Mutex::new(SeriesCache::new(MAX_SERIES, SERIES_WINDOW)),
        }
    }

    /// Creates the Event about `regarding`, or counts it in the series of the same Event
    /// published less than [`SERIES_WINDOW`] ago.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let key = SeriesKey {
            uid: regarding.uid.clone(),
            type_: event.type_,
            reason: event.reason.clone(),
            action: event.action.clone(),
        };
        let object =
            ObjectRef::new(regarding.name.as_deref().unwrap_or_default()).within(&namespace);
        let repeat = self.lock().repeat_of(&object, &key, now);
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let (name, count) = match repeat {
            Some((name, count)) => {
                // Only the series changes: the note stays the first one's.
                let patch = serde_json::json!({
                    "series": {"count": count, "lastObservedTime": MicroTime(now)}
                });
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                (name, count)
            }
            None => {
                let created = events
                    .create(
                        &PostParams::default(),
                        &self.new_event(event, regarding, &namespace, now),
                    )
                    .await?;
                (created.metadata.name.unwrap_or_default(), 1)
            }
        };
        self.lock().record(object, key, name, count, now);
        Ok(())
    }

    /// ScanRequest `object` was deleted: its series go with it.
    pub fn forget(&self, object: &ObjectRef<ScanRequest>) {
        self.lock().forget(object);
    }

    /// Keeps only the live series of the requests `live` says still exist.
    pub fn retain(&self, live: impl Fn(&ObjectRef<ScanRequest>) -> bool) {
        let mut cache = self.lock();
        cache.by_object.retain(|object, _| live(object));
        cache.prune(Timestamp::now());
    }

    /// Series remembered.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn new_event(
        &self,
        event: &Event,
        regarding: &ObjectReference,
        namespace: &str,
        now: Timestamp,
    ) -> K8sEvent {
        K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: Some(event.note.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                // As kube's and client-go's: the object's name and the time, unique enough.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..K8sEvent::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request by namespace and name (the uid is in each series: a request created again under
/// the same name starts new series).
type ObjectKey = ObjectRef<ScanRequest>;

/// What makes two Events of one object the same Event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeriesKey {
    uid: Option<String>,
    type_: EventType,
    reason: String,
    action: String,
}

#[derive(Debug)]
struct Series {
    key: SeriesKey,
    /// The Event object that counts the repeats.
    name: String,
    count: i32,
    last: Timestamp,
}

/// The series of each object, bounded in number and time. Pure: the caller passes the clock.
#[derive(Debug)]
struct SeriesCache {
    by_object: HashMap<ObjectKey, Vec<Series>>,
    len: usize,
    capacity: usize,
    window: Duration,
}

impl SeriesCache {
    fn new(capacity: usize, window: Duration) -> Self {
        Self {
            by_object: HashMap::new(),
            len: 0,
            capacity: capacity.max(1),
            window,
        }
    }

    fn live(&self, series: &Series, now: Timestamp) -> bool {
        now.duration_since(series.last)
            .try_into()
            .is_ok_and(|age: Duration| age < self.window)
    }

    /// The Event to count a repeat in, and the count it then has.
    fn repeat_of(
        &self,
        object: &ObjectKey,
        key: &SeriesKey,
        now: Timestamp,
    ) -> Option<(String, i32)> {
        let series = self
            .by_object
            .get(object)?
            .iter()
            .find(|s| s.key == *key && self.live(s, now))?;
        Some((series.name.clone(), series.count.saturating_add(1)))
    }

    fn record(
        &mut self,
        object: ObjectKey,
        key: SeriesKey,
        name: String,
        count: i32,
        now: Timestamp,
    ) {
        let list = self.by_object.entry(object).or_default();
        match list.iter_mut().find(|s| s.key == key) {
            Some(series) => {
                series.name = name;
                series.count = count;
                series.last = now;
            }
            None => {
                list.push(Series {
                    key,
                    name,
                    count,
                    last: now,
                });
                self.len = self.len.saturating_add(1);
            }
        }
        if self.len > self.capacity {
            self.prune(now);
        }
        if self.len > self.capacity {
            self.evict_oldest();
        }
    }

    fn forget(&mut self, object: &ObjectKey) {
        if let Some(list) = self.by_object.remove(object) {
            self.len = self.len.saturating_sub(list.len());
            self.shrink();
        }
    }

    fn prune(&mut self, now: Timestamp) {
        let window = self.window;
        let mut len = 0usize;
        self.by_object.retain(|_, list| {
            list.retain(|s| {
                now.duration_since(s.last)
                    .try_into()
                    .is_ok_and(|age: Duration| age < window)
            });
            len = len.saturating_add(list.len());
            !list.is_empty()
        });
        self.len = len;
        self.shrink();
    }

    /// Over the capacity with every series live: drop the objects whose latest Event is
    /// oldest until half the capacity is left (amortised: one sort makes room for many).
    fn evict_oldest(&mut self) {
        let mut by_age: Vec<(Timestamp, ObjectKey)> = self
            .by_object
            .iter()
            .map(|(k, list)| {
                let newest = list.iter().map(|s| s.last).max().unwrap_or(Timestamp::MIN);
                (newest, k.clone())
            })
            .collect();
        by_age.sort_by_key(|(newest, _)| *newest);
        for (_, object) in by_age {
            if self.len <= self.capacity / 2 {
                break;
            }
            if let Some(list) = self.by_object.remove(&object) {
                self.len = self.len.saturating_sub(list.len());
            }
        }
        self.shrink();
    }

    /// A map never gives back its capacity by itself: once mostly empty, hand it back.
    fn shrink(&mut self) {
        if self.by_object.capacity() > 64 && self.by_object.len() < self.by_object.capacity() / 4 {
            self.by_object
                .shrink_to(self.by_object.len().saturating_mul(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> SeriesKey {
        SeriesKey {
            uid: Some("uid-1".into()),
            type_: EventType::Normal,
            reason: reason.into(),
            action: "Scan application/x".into(),
        }
    }

    fn object(name: &str) -> ObjectKey {
        ObjectRef::new(name).within("team")
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_repeat_within_the_window_counts_in_the_first_events_series() {
        let mut cache = SeriesCache::new(100, SERIES_WINDOW);
        let object = object("app");
        assert!(
            cache
                .repeat_of(&object, &key("ReportStored"), at(0))
                .is_none()
        );
        cache.record(
            object.clone(),
            key("ReportStored"),
            "app.1".into(),
            1,
            at(0),
        );
        assert_eq!(
            cache.repeat_of(&object, &key("ReportStored"), at(60)),
            Some(("app.1".into(), 2))
        );
        cache.record(
            object.clone(),
            key("ReportStored"),
            "app.1".into(),
            2,
            at(60),
        );
        assert_eq!(
            cache.repeat_of(&object, &key("ReportStored"), at(120)),
            Some(("app.1".into(), 3))
        );
        // Another reason, or the same one after the window, is a new Event.
        assert!(
            cache
                .repeat_of(&object, &key("ScanSubmitted"), at(120))
                .is_none()
        );
        assert!(
            cache
                .repeat_of(&object, &key("ReportStored"), at(60 + 360))
                .is_none()
        );
        // A request created again under the same name (a new uid) starts over.
        let recreated = SeriesKey {
            uid: Some("uid-2".into()),
            ..key("ReportStored")
        };
        assert!(cache.repeat_of(&object, &recreated, at(120)).is_none());
    }

    #[test]
    fn the_series_of_deleted_requests_go_with_them() {
        let mut cache = SeriesCache::new(MAX_SERIES, SERIES_WINDOW);
        for i in 0..1000 {
            let object = object(&format!("sr-{i}"));
            cache.record(
                object.clone(),
                key("ScanSubmitted"),
                format!("sr-{i}.1"),
                1,
                at(0),
            );
            cache.record(object, key("ReportStored"), format!("sr-{i}.2"), 1, at(0));
        }
        assert_eq!(cache.len, 2000);
        let grown = cache.by_object.capacity();
        for i in 0..1000 {
            cache.forget(&object(&format!("sr-{i}")));
        }
        assert_eq!(cache.len, 0);
        assert!(cache.by_object.is_empty());
        assert!(
            cache.by_object.capacity() < grown / 4,
            "capacity {} kept (was {grown})",
            cache.by_object.capacity()
        );
    }

    #[test]
    fn expired_series_are_pruned_and_the_number_is_bounded() {
        let mut cache = SeriesCache::new(100, SERIES_WINDOW);
        for i in 0..50 {
            cache.record(object(&format!("old-{i}")), key("R"), "e".into(), 1, at(0));
        }
        cache.prune(at(359));
        assert_eq!(cache.len, 50, "still inside the window");
        cache.prune(at(360));
        assert_eq!(cache.len, 0);
        // Past the capacity with every series live, the oldest go first.
        for i in 0..=100 {
            cache.record(object(&format!("sr-{i}")), key("R"), "e".into(), 1, at(i));
        }
        assert!(cache.len <= 100, "{}", cache.len);
        assert!(
            cache
                .repeat_of(&object("sr-100"), &key("R"), at(100))
                .is_some()
        );
        assert!(
            cache
                .repeat_of(&object("sr-0"), &key("R"), at(100))
                .is_none()
        );
    }
}
