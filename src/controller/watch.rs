//! The watch wiring of `scanreport-operator run`: the ScanRequest watches (one per namespace,
//! or one for all), the Scanner and ScanPolicy caches, and readiness once the caches are
//! filled.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};

use tokio::sync::broadcast;

use super::context::Context;
use super::generations::{Change, Generations};
use super::{error_policy, reconcile};
use crate::api::{ScanPolicy, ScanRequest, Scanner};

/// ScanRequests per page of the watch's list. A page is decoded whole, managed fields and
/// all (about 10 KiB per Ready request), before its objects are trimmed into the cache: at
/// kube's default of 500 a page was 5 MiB on top of the cache when a restarted operator
/// listed 10,000 requests (docs/benchmarks.md).
const LIST_PAGE: u32 = 100;

/// Scanner and ScanPolicy changes buffered per controller; they change rarely, so a controller
/// that falls this far behind has missed a burst and catches up at its next requeue.
const SCANNER_FANOUT: usize = 1024;

/// The changes of a shared watch (Scanners, ScanPolicies), as a controller trigger stream.
/// Objects go by `Arc`: the channel keeps a slot per buffered change, and a slot of a whole
/// Scanner would cost its size times [`SCANNER_FANOUT`] per channel (1.3 MB for both).
fn subscribe<K: Send + Sync + 'static>(
    changes: &broadcast::Sender<Arc<K>>,
) -> impl futures::Stream<Item = Arc<K>> + Send + 'static {
    futures::stream::unfold(changes.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(object) => return Some((object, rx)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        kind = std::any::type_name::<K>(),
                        "missed changes of a shared watch; requests catch up at their next requeue"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// One cluster-wide watch of `K` for the process: it fills `writer`'s cache and fans every
/// changed or deleted object out to the controllers. Runs until `shutdown`.
fn shared_watch<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    fanout: broadcast::Sender<Arc<K>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let watch = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .for_each(move |object| {
            if let Ok(object) = object {
                // No receiver yet (start-up) is fine: every request is reconciled at start.
                let _ = fanout.send(Arc::new(object));
            }
            futures::future::ready(())
        });
    tokio::spawn(async move {
        tokio::select! {
            () = watch => {}
            () = shutdown.cancelled() => {}
        }
    })
}

/// Runs the controller until `shutdown` resolves: one watch per namespace (or one for all),
/// each re-reconciling the ScanRequests that name a Scanner when that Scanner changes.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: tokio_util::sync::CancellationToken,
    ready: tokio::sync::watch::Sender<bool>,
) {
    let namespaces: Vec<Option<String>> = if ctx.config.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.config.namespaces.iter().cloned().map(Some).collect()
    };
    // One Scanner watch for the process: it fills the cache reconciles look Scanners up in, and
    // fans every changed or deleted Scanner out to each controller, which maps it to the
    // ScanRequests that name it. (kube's shared reflector streams do not pass deletions on, and
    // a deleted Scanner must stall its requests at once.)
    let (scanner_reader, scanner_writer) = reflector::store();
    let (scanner_changes, _) = broadcast::channel::<Arc<Scanner>>(SCANNER_FANOUT);
    let scanner_cache = shared_watch(
        Api::<Scanner>::all(ctx.client.clone()),
        scanner_writer,
        scanner_changes.clone(),
        shutdown.clone(),
    );
    ctx.adapters.add_scanner_store(scanner_reader.clone());
    // ScanPolicies the same way: a changed policy re-evaluates exactly its referrers.
    let (policy_reader, policy_writer) = reflector::store();
    let (policy_changes, _) = broadcast::channel::<Arc<ScanPolicy>>(SCANNER_FANOUT);
    let policy_cache = shared_watch(
        Api::<ScanPolicy>::all(ctx.client.clone()),
        policy_writer,
        policy_changes.clone(),
        shutdown.clone(),
    );
    ctx.policies.add_store(policy_reader.clone());
    // Reconciles look Scanners and ScanPolicies up in these caches: an empty one would stall
    // every request with "does not exist" at start-up.
    let caches_ready = async {
        scanner_reader.wait_until_ready().await.is_ok()
            && policy_reader.wait_until_ready().await.is_ok()
    };
    tokio::select! {
        ready = caches_ready => {
            if !ready {
                return;
            }
        }
        () = shutdown.cancelled() => return,
    }
    let mut controllers = Vec::new();
    let mut stores = Caches {
        scanners: vec![scanner_reader],
        policies: vec![policy_reader],
        requests: Vec::new(),
    };
    for ns in namespaces {
        let requests: Api<ScanRequest> = match &ns {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        // Only spec changes (a new generation) trigger a reconcile from the watch: the
        // operator's own status writes would otherwise each cause one more, to no effect.
        // Requeues, Scanner changes and restarts still reconcile everything they must.
        let (sr_store, writer) = reflector::store();
        let (mut cache, listed) = FirstListStreamed::new(writer);
        let forget = ctx.clone();
        let mut generations = Generations::default();
        let changes = watcher(requests, watcher::Config::default().page_size(LIST_PAGE))
            .default_backoff()
            .modify(trim)
            .map_ok(move |event| cache.apply(event))
            .filter_map(move |event| {
                futures::future::ready(match event {
                    Ok(event) => match generations.admit(event) {
                        Change::Spec(sr) => Some(Ok(*sr)),
                        // A deleted request leaves no state behind.
                        Change::Gone(objects) => {
                            for object in &objects {
                                forget.forget_request(object);
                            }
                            None
                        }
                        Change::Unchanged => None,
                    },
                    Err(e) => Some(Err(e)),
                })
            });
        let controller = Controller::for_stream(changes, sr_store.clone())
            .with_config(
                kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
            )
            // Requests that waited on a shared scan, reconciled as soon as it ends.
            .reconcile_on(ctx.wakeups.subscribe(ns.clone()));
        stores.requests.push(RequestCache {
            store: sr_store.clone(),
            listed,
        });
        let referrers = sr_store.clone();
        let controller = controller
            .watches_shared_stream(subscribe(&scanner_changes), move |scanner: Arc<Scanner>| {
                let name = scanner.name_any();
                sr_store
                    .state()
                    .into_iter()
                    .filter(|sr| sr.spec.scanner == name)
                    .map(|sr| ObjectRef::from(sr.as_ref()))
                    .collect::<Vec<_>>()
            })
            .watches_shared_stream(
                subscribe(&policy_changes),
                move |policy: Arc<ScanPolicy>| {
                    policy_referrers(&referrers.state(), &policy.name_any())
                },
            )
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "reconcile loop");
                }
            });
        controllers.push(controller);
    }
    // The retention loop runs where the controllers run: on the leader only.
    let retention = super::retention::run(ctx.clone(), stores.requests.clone(), shutdown.clone());
    let readiness = async move {
        for scanners in stores.scanners {
            scanners.wait_until_ready().await.ok();
        }
        for policies in stores.policies {
            policies.wait_until_ready().await.ok();
        }
        for requests in &stores.requests {
            requests.listed().await;
        }
        ready.send_replace(true);
        tracing::info!("watch caches synced");
    };
    futures::join!(futures::future::join_all(controllers), readiness, retention);
    scanner_cache.abort();
    policy_cache.abort();
}

/// kubectl's copy of the whole object as last applied client-side.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a cached ScanRequest what no reconcile reads: `managedFields` (every manager's
/// field tree, one small allocation per field) and kubectl's last-applied copy of the object.
/// The cache holds every request for as long as it exists; these fields were 71% of a cached
/// Ready object's heap (docs/benchmarks.md). Status applies are server-side and never send
/// them back.
pub fn trim(sr: &mut ScanRequest) {
    sr.metadata.managed_fields = None;
    if let Some(annotations) = sr.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            sr.metadata.annotations = None;
        }
    }
}

/// The requests that name ScanPolicy `name` in `spec.policyRef`, and only those: a policy
/// change re-evaluates exactly its referrers.
pub fn policy_referrers(requests: &[Arc<ScanRequest>], name: &str) -> Vec<ObjectRef<ScanRequest>> {
    requests
        .iter()
        .filter(|sr| sr.spec.policy_ref.as_ref().is_some_and(|r| r.name == name))
        .map(|sr| ObjectRef::from(sr.as_ref()))
        .collect()
}

/// Watch caches that must be filled before the operator reports ready.
#[derive(Default)]
struct Caches {
    scanners: Vec<reflector::Store<Scanner>>,
    policies: Vec<reflector::Store<ScanPolicy>>,
    requests: Vec<RequestCache>,
}

/// A ScanRequest watch cache, and whether its first list has been read whole.
#[derive(Clone)]
pub struct RequestCache {
    pub store: reflector::Store<ScanRequest>,
    listed: tokio::sync::watch::Receiver<bool>,
}

impl RequestCache {
    /// Waits until the cache holds every request of the first list (false: the watch ended
    /// first). Until then the cache lacks requests that exist.
    pub async fn listed(&self) -> bool {
        self.listed.clone().wait_for(|listed| *listed).await.is_ok()
    }
}

/// Applies a ScanRequest watch to its cache, streaming the first list in: kube holds every
/// reconcile until the cache is ready, which a plain reflector only is once the whole list has
/// been read (0.07-0.16 s for 1,000 requests and 1 s for 10,000 on two cores, with nothing
/// reconciled meanwhile). Here the cache is ready at once and each listed request goes in as it
/// arrives, so that reconciles start with the first page. Whatever must see every request
/// (readiness, the retention sweep and its cleanup of per-request state) waits for
/// [`RequestCache::listed`] instead. Later re-lists are applied as
/// kube applies them: swapped in whole at their end, which also drops requests deleted while
/// the watch was down.
struct FirstListStreamed {
    writer: reflector::store::Writer<ScanRequest>,
    /// Set once the first list has ended.
    listed: Option<tokio::sync::watch::Sender<bool>>,
}

impl FirstListStreamed {
    fn new(
        writer: reflector::store::Writer<ScanRequest>,
    ) -> (Self, tokio::sync::watch::Receiver<bool>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (
            Self {
                writer,
                listed: Some(tx),
            },
            rx,
        )
    }

    /// Applies `event` to the cache and passes it on unchanged.
    fn apply(&mut self, event: watcher::Event<ScanRequest>) -> watcher::Event<ScanRequest> {
        use watcher::Event;
        let Some(listed) = &self.listed else {
            self.writer.apply_watcher_event(&event);
            return event;
        };
        match event {
            // An empty cache, ready now. A first list that failed and starts again empties it
            // too, so that requests deleted meanwhile do not stay.
            Event::Init => {
                self.writer.apply_watcher_event(&Event::Init);
                self.writer.apply_watcher_event(&Event::InitDone);
                Event::Init
            }
            Event::InitApply(sr) => {
                let applied = Event::Apply(sr);
                self.writer.apply_watcher_event(&applied);
                match applied {
                    Event::Apply(sr) => Event::InitApply(sr),
                    other => other,
                }
            }
            Event::InitDone => {
                listed.send_replace(true);
                self.listed = None;
                Event::InitDone
            }
            other => {
                self.writer.apply_watcher_event(&other);
                other
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPLIED: &str = r#"
apiVersion: scanreport.io/v1alpha1
kind: ScanRequest
metadata:
  name: web
  namespace: team-a
  generation: 2
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"apiVersion":"scanreport.io/v1alpha1","kind":"ScanRequest","spec":{"scanner":"trivy"}}'
    team: payments
  managedFields:
    - manager: kubectl-client-side-apply
      operation: Update
      apiVersion: scanreport.io/v1alpha1
      fieldsType: FieldsV1
      fieldsV1: {"f:spec": {"f:scanner": {}, "f:artifact": {"f:repository": {}, "f:digest": {}}}}
    - manager: scanreport-operator
      operation: Apply
      subresource: status
      apiVersion: scanreport.io/v1alpha1
      fieldsType: FieldsV1
      fieldsV1: {"f:status": {"f:observedGeneration": {}, "f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}}}}}
spec:
  scanner: trivy
  registry:
    url: https://registry.example.com
  artifact:
    repository: library/web
    digest: sha256:1111111111111111111111111111111111111111111111111111111111111111
  reportMimeTypes:
    - application/vnd.security.vulnerability.report; version=1.1
status:
  observedGeneration: 2
  conditions:
    - type: Ready
      status: "True"
      reason: ReportsReady
      message: Every requested report is stored
      lastTransitionTime: "2026-12-02T00:00:00Z"
"#;

    #[test]
    fn the_cache_drops_managed_fields_and_kubectls_copy_and_keeps_what_a_reconcile_reads() {
        let full: ScanRequest = serde_yaml::from_str(APPLIED).unwrap();
        let mut cached = full.clone();
        trim(&mut cached);
        assert!(cached.metadata.managed_fields.is_none());
        let annotations = cached.metadata.annotations.clone().unwrap_or_default();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(
            annotations.get("team").map(String::as_str),
            Some("payments")
        );
        // Spec, status, identity and generation are what the pipeline reads: all kept.
        assert_eq!(
            serde_json::to_value(&cached.spec).unwrap(),
            serde_json::to_value(&full.spec).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&cached.status).unwrap(),
            serde_json::to_value(&full.status).unwrap()
        );
        assert_eq!(cached.metadata.generation, Some(2));
        assert_eq!(cached.name_any(), "web");
        let size = |sr: &ScanRequest| serde_json::to_vec(sr).unwrap().len();
        assert!(
            size(&cached) * 3 < size(&full) * 2,
            "{} vs {}",
            size(&cached),
            size(&full)
        );
    }

    #[test]
    fn a_request_whose_only_annotation_was_kubectls_copy_is_left_with_none() {
        let mut sr: ScanRequest = serde_yaml::from_str(APPLIED).unwrap();
        if let Some(a) = sr.metadata.annotations.as_mut() {
            a.remove("team");
        }
        trim(&mut sr);
        assert!(sr.metadata.annotations.is_none());
    }

    fn named(name: &str) -> ScanRequest {
        let mut sr: ScanRequest = serde_yaml::from_str(APPLIED).unwrap();
        sr.metadata.name = Some(name.to_owned());
        sr
    }

    fn cached_names(store: &reflector::Store<ScanRequest>) -> Vec<String> {
        let mut names: Vec<String> = store.state().iter().map(|sr| sr.name_any()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn reconciles_can_start_with_the_first_page_while_readiness_waits_for_the_whole_list() {
        use watcher::Event;
        let (store, writer) = reflector::store();
        let (mut cache, listed) = FirstListStreamed::new(writer);
        let cache_view = RequestCache {
            store: store.clone(),
            listed,
        };
        cache.apply(Event::Init);
        // kube's controller reconciles nothing until its cache is ready.
        use futures::FutureExt;
        assert!(
            matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))),
            "the cache must be ready when the list starts"
        );
        let passed = cache.apply(Event::InitApply(named("a")));
        assert!(matches!(passed, Event::InitApply(sr) if sr.name_any() == "a"));
        assert_eq!(
            cached_names(&store),
            ["a"],
            "a listed request is cached at once"
        );
        assert!(!*cache_view.listed.borrow(), "the list has not ended");
        cache.apply(Event::InitApply(named("b")));
        cache.apply(Event::InitDone);
        assert!(cache_view.listed().await);
        assert_eq!(cached_names(&store), ["a", "b"]);

        // A later re-list (the watch was down): swapped in whole at its end, so that a
        // request deleted meanwhile ("a") goes.
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(named("b")));
        cache.apply(Event::InitApply(named("c")));
        assert_eq!(
            cached_names(&store),
            ["a", "b"],
            "a re-list applies at its end"
        );
        cache.apply(Event::InitDone);
        assert_eq!(cached_names(&store), ["b", "c"]);
        cache.apply(Event::Delete(named("b")));
        assert_eq!(cached_names(&store), ["c"]);
    }

    #[test]
    fn a_first_list_that_starts_again_drops_what_its_broken_attempt_cached() {
        use watcher::Event;
        let (store, writer) = reflector::store();
        let (mut cache, _listed) = FirstListStreamed::new(writer);
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(named("deleted-meanwhile")));
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(named("b")));
        assert_eq!(cached_names(&store), ["b"]);
    }
}
