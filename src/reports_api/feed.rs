//! The one view of "which reports does each ScanRequest reference" that every request and
//! every watcher reads. A single ScanRequest watch keeps, per request, only its references
//! (not whole objects). When a request's references change, the feed bumps its
//! resourceVersion and, if anyone watches, reads the changed rows' metadata in one query and
//! broadcasts ADDED/MODIFIED/DELETED: a watch costs no database query of its own, however many
//! watchers there are.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::names::Kind;
use super::objects::{self, Reference, ReportObject};
use super::server::Filter;
use crate::api::ScanRequest;
use crate::store::{ReportMeta, Store};

/// Events a slow watcher may fall behind by before it is told to list again.
const BACKLOG: usize = 1024;

/// One watch event for the served kinds.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub kind: &'static str,
    pub object: Box<ReportObject>,
}

type Key = (String, String);

pub struct Feed {
    references: RwLock<HashMap<Key, Vec<Reference>>>,
    resource_version: AtomicU64,
    events: broadcast::Sender<WatchEvent>,
    synced: watch::Receiver<bool>,
}

impl Feed {
    /// Starts the ScanRequest watch, of every namespace or of `namespaces` only (as the
    /// operator's own watches); the feed serves once every first list is in.
    pub fn start(
        client: kube::Client,
        store: Store,
        namespaces: &[String],
        shutdown: CancellationToken,
    ) -> Arc<Feed> {
        let (synced_tx, synced) = watch::channel(false);
        let (events, _) = broadcast::channel(BACKLOG);
        let feed = Arc::new(Feed {
            references: RwLock::new(HashMap::new()),
            // Starts at the clock so a restarted server never reuses an earlier version.
            resource_version: AtomicU64::new(
                u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1),
            ),
            events,
            synced,
        });
        let scopes: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        let (done_tx, done_rx) = tokio::sync::mpsc::channel(scopes.len().max(1));
        for scope in scopes.iter().cloned() {
            tokio::spawn(run(
                feed.clone(),
                client.clone(),
                store.clone(),
                scope,
                done_tx.clone(),
                shutdown.clone(),
            ));
        }
        tokio::spawn(all_synced(done_rx, scopes.len(), synced_tx));
        feed
    }

    /// A feed fed by hand, for tests.
    pub fn detached() -> (Arc<Feed>, watch::Sender<bool>) {
        let (synced_tx, synced) = watch::channel(false);
        let (events, _) = broadcast::channel(BACKLOG);
        let feed = Arc::new(Feed {
            references: RwLock::new(HashMap::new()),
            resource_version: AtomicU64::new(1),
            events,
            synced,
        });
        (feed, synced_tx)
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version.load(Ordering::SeqCst)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
    }

    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut synced = self.synced.clone();
        tokio::time::timeout(timeout, synced.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The references the filter's kind and namespace select, and the version they are as of.
    pub fn references(&self, filter: &Filter) -> (Vec<Reference>, u64) {
        let Ok(map) = self.references.read() else {
            return (Vec::new(), self.resource_version());
        };
        let refs = map
            .iter()
            .filter(|((ns, _), _)| filter.namespace.is_empty() || *ns == filter.namespace)
            .flat_map(|(_, refs)| refs.iter())
            .filter(|r| r.kind == filter.kind)
            .cloned()
            .collect();
        (refs, self.resource_version())
    }

    /// Replaces the references of one ScanRequest (`None`: it is gone) and returns what changed.
    pub fn apply(&self, key: Key, new: Option<Vec<Reference>>) -> Vec<(&'static str, Reference)> {
        let Ok(mut map) = self.references.write() else {
            return Vec::new();
        };
        let old = match &new {
            Some(refs) if refs.is_empty() => map.remove(&key),
            Some(_) => map.get(&key).cloned(),
            None => map.remove(&key),
        }
        .unwrap_or_default();
        let mut new = new.unwrap_or_default();
        let mut changes = Vec::new();
        for r in &mut new {
            match old.iter().find(|o| o.name == r.name && o.kind == r.kind) {
                Some(o) if same(o, r) => r.resource_version = o.resource_version.clone(),
                found => {
                    r.resource_version = self.bump().to_string();
                    let kind = if found.is_some() { "MODIFIED" } else { "ADDED" };
                    changes.push((kind, r.clone()));
                }
            }
        }
        for o in &old {
            if !new.iter().any(|r| r.name == o.name && r.kind == o.kind) {
                let mut gone = o.clone();
                gone.resource_version = self.bump().to_string();
                changes.push(("DELETED", gone));
            }
        }
        if !new.is_empty() {
            map.insert(key, new);
        }
        changes
    }

    fn bump(&self) -> u64 {
        self.resource_version
            .fetch_add(1, Ordering::SeqCst)
            .saturating_add(1)
    }

    /// Broadcasts `changes`, with metadata read in one query; skipped when nobody watches.
    async fn publish(&self, store: &Store, changes: Vec<(&'static str, Reference)>) {
        if changes.is_empty() || self.events.receiver_count() == 0 {
            return;
        }
        let ids: Vec<Uuid> = changes.iter().map(|(_, r)| r.report_id).collect();
        let metas = match store.list_meta(&ids).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read report metadata for watchers");
                HashMap::new()
            }
        };
        for (kind, r) in changes {
            let Some(meta) = metas.get(&r.report_id).cloned().or_else(|| {
                // A deleted reference whose row is gone too still tells watchers its name.
                (kind == "DELETED").then(|| placeholder(&r))
            }) else {
                continue;
            };
            let object = Box::new(ReportObject::new(&r, &meta));
            let _ = self.events.send(WatchEvent { kind, object });
        }
    }
}

fn same(a: &Reference, b: &Reference) -> bool {
    a.report_id == b.report_id
        && a.generated_at == b.generated_at
        && a.registry == b.registry
        && a.repository == b.repository
        && a.tag == b.tag
}

fn placeholder(r: &Reference) -> ReportMeta {
    let t = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    ReportMeta {
        id: r.report_id,
        digest: String::new(),
        registration_uuid: Uuid::nil(),
        mime_type: r.mime_type.clone(),
        summary: Default::default(),
        scanner_name: String::new(),
        scanner_vendor: String::new(),
        scanner_version: String::new(),
        generated_at: t,
        created_at: t,
        updated_at: t,
    }
}

fn references_of(sr: &ScanRequest) -> Vec<Reference> {
    Kind::ALL
        .into_iter()
        .flat_map(|k| objects::references(sr, k))
        .collect()
}

fn key_of(sr: &ScanRequest) -> Key {
    (sr.namespace().unwrap_or_default(), sr.name_any())
}

/// Marks the feed synced once each of `scopes` watches has listed once.
async fn all_synced(
    mut done: tokio::sync::mpsc::Receiver<()>,
    scopes: usize,
    synced: watch::Sender<bool>,
) {
    for _ in 0..scopes {
        if done.recv().await.is_none() {
            return;
        }
    }
    synced.send_replace(true);
}

/// One watch: of `scope` (a namespace), or of every namespace.
async fn run(
    feed: Arc<Feed>,
    client: kube::Client,
    store: Store,
    scope: Option<String>,
    synced: tokio::sync::mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    let api: Api<ScanRequest> = match &scope {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut first_list = true;
    let stream = watcher(api).default_backoff();
    tokio::pin!(stream);
    // A relist collects every request, then replaces the whole map at once.
    let mut relist: Option<HashMap<Key, Vec<Reference>>> = None;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            e = stream.next() => e,
        };
        let Some(event) = event else { return };
        match event {
            Ok(Event::Init) => relist = Some(HashMap::new()),
            Ok(Event::InitApply(sr)) => {
                if let Some(next) = relist.as_mut() {
                    next.insert(key_of(&sr), references_of(&sr));
                }
            }
            Ok(Event::InitDone) => {
                let next = relist.take().unwrap_or_default();
                // Only this watch's keys: another namespace's watch owns the rest.
                let keys: Vec<Key> = feed
                    .references
                    .read()
                    .map(|m| {
                        m.keys()
                            .filter(|(ns, _)| scope.as_ref().is_none_or(|s| s == ns))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let mut changes = Vec::new();
                for key in keys {
                    if !next.contains_key(&key) {
                        changes.extend(feed.apply(key, None));
                    }
                }
                for (key, refs) in next {
                    changes.extend(feed.apply(key, Some(refs)));
                }
                if first_list {
                    first_list = false;
                    let _ = synced.send(()).await;
                }
                feed.publish(&store, changes).await;
            }
            Ok(Event::Apply(sr)) => {
                let changes = feed.apply(key_of(&sr), Some(references_of(&sr)));
                feed.publish(&store, changes).await;
            }
            Ok(Event::Delete(sr)) => {
                let changes = feed.apply(key_of(&sr), None);
                feed.publish(&store, changes).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ScanRequest watch for the report API failed; retrying")
            }
        }
    }
}

fn watcher(
    api: Api<ScanRequest>,
) -> impl futures::Stream<Item = Result<Event<ScanRequest>, watcher::Error>> {
    watcher::watcher(api, watcher::Config::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr(yaml: &str) -> ScanRequest {
        serde_yaml::from_str(yaml).unwrap()
    }

    const READY: &str = r#"
apiVersion: scanreport.io/v1alpha1
kind: ScanRequest
metadata: { name: web, namespace: team-a }
spec:
  scanner: trivy
  registry: { url: "https://registry.example" }
  artifact: { repository: app, digest: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }
status:
  reports:
  - mimeType: application/vnd.security.vulnerability.report; version=1.1
    reportId: 8d7a2f5e-3c1b-5e9a-9f00-000000000001
    phase: Ready
    generatedAt: "2026-11-30T10:00:00Z"
"#;

    #[test]
    fn a_reference_is_added_modified_by_a_rescan_and_deleted_with_its_request() {
        let (feed, _) = Feed::detached();
        let key = ("team-a".to_owned(), "web".to_owned());
        let first = feed.apply(key.clone(), Some(references_of(&sr(READY))));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, "ADDED");
        let v1 = feed.resource_version();
        assert!(
            feed.apply(key.clone(), Some(references_of(&sr(READY))))
                .is_empty(),
            "an unchanged status is no event"
        );
        assert_eq!(feed.resource_version(), v1);
        let rescanned = READY.replace("10:00:00Z", "11:00:00Z");
        let second = feed.apply(key.clone(), Some(references_of(&sr(&rescanned))));
        assert_eq!(second[0].0, "MODIFIED");
        assert!(feed.resource_version() > v1);
        let gone = feed.apply(key, None);
        assert_eq!(gone[0].0, "DELETED");
        let filter = Filter {
            kind: Kind::Vulnerability,
            namespace: "team-a".into(),
            labels: None,
            fields: Default::default(),
        };
        assert!(feed.references(&filter).0.is_empty());
    }

    #[test]
    fn references_are_per_namespace() {
        let (feed, _) = Feed::detached();
        feed.apply(
            ("team-a".into(), "web".into()),
            Some(references_of(&sr(READY))),
        );
        let other = READY.replace("team-a", "team-b");
        feed.apply(
            ("team-b".into(), "web".into()),
            Some(references_of(&sr(&other))),
        );
        let filter = |ns: &str| Filter {
            kind: Kind::Vulnerability,
            namespace: ns.into(),
            labels: None,
            fields: Default::default(),
        };
        let a = feed.references(&filter("team-a")).0;
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].namespace, "team-a");
        assert_eq!(feed.references(&filter("")).0.len(), 2);
        assert!(feed.references(&filter("team-c")).0.is_empty());
    }
}
