//! The watch wiring of `scanreport-operator run`: the ScanRequest watches (one per namespace,
//! or one for all), the Scanner and ScanPolicy caches, and readiness once the caches are
//! filled.

use std::sync::Arc;

use futures::StreamExt;
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

/// Scanner and ScanPolicy changes buffered per controller; they change rarely, so a controller
/// that falls this far behind has missed a burst and catches up at its next requeue.
const SCANNER_FANOUT: usize = 1024;

/// The changes of a shared watch (Scanners, ScanPolicies), as a controller trigger stream.
fn subscribe<K: Clone + Send + 'static>(
    changes: &broadcast::Sender<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    futures::stream::unfold(changes.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(object) => return Some((Ok(object), rx)),
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
    fanout: broadcast::Sender<K>,
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
                let _ = fanout.send(object);
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
    let (scanner_changes, _) = broadcast::channel::<Scanner>(SCANNER_FANOUT);
    let scanner_cache = shared_watch(
        Api::<Scanner>::all(ctx.client.clone()),
        scanner_writer,
        scanner_changes.clone(),
        shutdown.clone(),
    );
    ctx.adapters.add_scanner_store(scanner_reader.clone());
    // ScanPolicies the same way: a changed policy re-evaluates exactly its referrers.
    let (policy_reader, policy_writer) = reflector::store();
    let (policy_changes, _) = broadcast::channel::<ScanPolicy>(SCANNER_FANOUT);
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
        let forget = ctx.clone();
        let mut generations = Generations::default();
        let changes = watcher(requests, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
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
        let controller = Controller::for_stream(changes, sr_store.clone()).with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        );
        stores.requests.push(sr_store.clone());
        let referrers = sr_store.clone();
        let controller = controller
            .watches_stream(subscribe(&scanner_changes), move |scanner: Scanner| {
                let name = scanner.name_any();
                sr_store
                    .state()
                    .into_iter()
                    .filter(|sr| sr.spec.scanner == name)
                    .map(|sr| ObjectRef::from(sr.as_ref()))
                    .collect::<Vec<_>>()
            })
            .watches_stream(subscribe(&policy_changes), move |policy: ScanPolicy| {
                policy_referrers(&referrers.state(), &policy.name_any())
            })
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
        for requests in stores.requests {
            requests.wait_until_ready().await.ok();
        }
        ready.send_replace(true);
        tracing::info!("watch caches synced");
    };
    futures::join!(futures::future::join_all(controllers), readiness, retention);
    scanner_cache.abort();
    policy_cache.abort();
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
    requests: Vec<reflector::Store<ScanRequest>>,
}
