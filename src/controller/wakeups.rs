//! Requests that wait on a scan another request runs, woken together when it ends.
//!
//! Many ScanRequests of one tuple share one scan: one of them fetches the report and stores it
//! (one download, one upsert); the others wait. Each waiting reconcile registers its request
//! here under the report id, and the reconcile that stored the report, or saw the scan fail,
//! be lost or its poll given back, wakes all of them at once through the controllers'
//! `reconcile_on` streams. They then read the stored row (one statement each) instead of
//! re-reading the tuple on a timer until it is there. Their timer stays as a fallback (a wake
//! lost to a restart, a scan another leader finishes), so it can be long.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use uuid::Uuid;

use crate::api::ScanRequest;

/// Waiting requests kept at once; beyond it a request relies on its timer alone.
const CAPACITY: usize = 100_000;

/// Reports whose last wake is remembered, for requests that read the tuple before the wake and
/// register after it; beyond it the oldest are forgotten (those requests use their timer).
const RECENT: usize = 4096;

type Request = ObjectRef<ScanRequest>;

#[derive(Default)]
pub struct Wakeups {
    waiting: Mutex<Waiting>,
    /// One route per controller: the namespace it watches (`None`: all) and its trigger.
    routes: Mutex<Vec<(Option<String>, mpsc::UnboundedSender<Request>)>>,
}

#[derive(Default)]
struct Waiting {
    /// Per report id, the requests waiting for it.
    requests: HashMap<Uuid, HashSet<Request>>,
    /// Entries of `requests` in all.
    count: usize,
    /// Wakes so far; and the number of the last wake of recently woken reports.
    seq: u64,
    recent: HashMap<Uuid, u64>,
}

/// When a reconcile read the state it waits on: [`Wakeups::ticket`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl Wakeups {
    /// Taken before reading a tuple's state: a wake of that report after it means the state
    /// read may be stale, and [`Wakeups::wait`] reconciles the request again at once.
    pub fn ticket(&self) -> Ticket {
        Ticket(lock(&self.waiting).seq)
    }

    /// The wake-ups of requests in `namespace` (`None`: every namespace), for one controller's
    /// `reconcile_on`.
    pub fn subscribe(&self, namespace: Option<String>) -> impl Stream<Item = Request> + use<> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).push((namespace, tx));
        UnboundedReceiverStream::new(rx)
    }

    /// `request` waits for the report `report` another reconcile is fetching or scanning; it
    /// read the state with `ticket`.
    pub fn wait(&self, report: Uuid, request: Request, ticket: Ticket) {
        let mut w = lock(&self.waiting);
        if w.recent.get(&report).is_some_and(|&woken| woken > ticket.0) {
            // The scan ended between the read and now: no wake would come.
            drop(w);
            self.send(std::slice::from_ref(&request));
            return;
        }
        if w.count >= CAPACITY {
            return;
        }
        if w.requests.entry(report).or_default().insert(request) {
            w.count = w.count.saturating_add(1);
        }
    }

    /// The scan of `report` ended (stored, failed, lost) or its poll was given back: every
    /// request waiting for it is reconciled now, except `by`, the request whose reconcile saw it
    /// end (it is running; a second reconcile right after it would read its own status write
    /// from a cache that may not have it yet). Returns how many were woken.
    pub fn wake(&self, report: Uuid, by: &Request) -> usize {
        let woken: Vec<Request> = {
            let mut w = lock(&self.waiting);
            w.seq = w.seq.saturating_add(1);
            let seq = w.seq;
            if w.recent.len() >= RECENT {
                w.recent.clear();
            }
            w.recent.insert(report, seq);
            let mut woken = w.requests.remove(&report).unwrap_or_default();
            w.count = w.count.saturating_sub(woken.len());
            woken.remove(by);
            woken.into_iter().collect()
        };
        self.send(&woken);
        woken.len()
    }

    /// Reconciles `requests` now, each through the controller of its namespace.
    fn send(&self, requests: &[Request]) {
        if requests.is_empty() {
            return;
        }
        let mut routes = lock(&self.routes);
        // A controller that stopped (shutdown) has dropped its receiver.
        routes.retain(|(_, tx)| !tx.is_closed());
        for request in requests {
            let route = routes.iter().find(|(ns, _)| match ns {
                None => true,
                Some(ns) => request.namespace.as_deref() == Some(ns.as_str()),
            });
            if let Some((_, tx)) = route {
                // The receiver lives as long as its controller; a send to a stopped one is moot.
                let _ = tx.send(request.clone());
            }
        }
    }

    /// `request` was deleted: it waits for nothing any more.
    pub fn forget(&self, request: &Request) {
        let mut w = lock(&self.waiting);
        let mut removed = 0usize;
        w.requests.retain(|_, requests| {
            if requests.remove(request) {
                removed = removed.saturating_add(1);
            }
            !requests.is_empty()
        });
        w.count = w.count.saturating_sub(removed);
    }

    /// Entries waiting now.
    pub fn len(&self) -> usize {
        lock(&self.waiting).count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A poisoned lock still holds consistent data here: every update is a single step.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn request(ns: &str, name: &str) -> Request {
        ObjectRef::new(name).within(ns)
    }

    #[tokio::test]
    async fn one_wake_reconciles_every_waiter_of_the_report_through_its_namespace_controller() {
        let w = Wakeups::default();
        let mut team_a = Box::pin(w.subscribe(Some("team-a".into())));
        let mut team_b = Box::pin(w.subscribe(Some("team-b".into())));
        let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
        let t = w.ticket();
        w.wait(r1, request("team-a", "x"), t);
        w.wait(r1, request("team-a", "x"), t);
        w.wait(r1, request("team-b", "y"), t);
        w.wait(r2, request("team-a", "z"), t);
        assert_eq!(w.len(), 3, "a request waits once per report");
        assert_eq!(w.wake(r1, &request("team-b", "storer")), 2);
        assert_eq!(team_a.next().await, Some(request("team-a", "x")));
        assert_eq!(team_b.next().await, Some(request("team-b", "y")));
        assert_eq!(
            w.wake(r1, &request("team-b", "storer")),
            0,
            "woken requests are not woken again"
        );
        assert_eq!(w.len(), 1, "the other report's waiter stays");
    }

    #[tokio::test]
    async fn an_all_namespaces_controller_gets_every_wake() {
        let w = Wakeups::default();
        let mut all = Box::pin(w.subscribe(None));
        let r = Uuid::new_v4();
        w.wait(r, request("team-c", "q"), w.ticket());
        w.wake(r, &request("team-c", "storer"));
        assert_eq!(all.next().await, Some(request("team-c", "q")));
    }

    #[tokio::test]
    async fn a_request_that_read_before_the_wake_and_waits_after_it_is_reconciled_at_once() {
        let w = Wakeups::default();
        let mut all = Box::pin(w.subscribe(None));
        let (r, other) = (Uuid::new_v4(), Uuid::new_v4());
        let read = w.ticket();
        w.wake(r, &request("team-a", "storer"));
        w.wait(r, request("team-a", "late"), read);
        assert_eq!(all.next().await, Some(request("team-a", "late")));
        assert!(w.is_empty(), "it was sent, not parked");
        // A wake of another report does not count.
        let read = w.ticket();
        w.wake(other, &request("team-a", "storer"));
        w.wait(r, request("team-a", "parked"), read);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn the_request_that_stored_the_report_is_not_woken_by_its_own_store() {
        let w = Wakeups::default();
        let r = Uuid::new_v4();
        let t = w.ticket();
        w.wait(r, request("team-a", "poller"), t);
        w.wait(r, request("team-a", "joined"), t);
        assert_eq!(w.wake(r, &request("team-a", "poller")), 1);
        assert!(w.is_empty(), "the storer is no longer waiting either");
    }

    #[test]
    fn a_deleted_request_is_forgotten_and_the_waiting_set_is_bounded() {
        let w = Wakeups::default();
        let r = Uuid::new_v4();
        w.wait(r, request("team-a", "x"), w.ticket());
        w.forget(&request("team-a", "x"));
        assert!(w.is_empty());
        assert_eq!(w.wake(r, &request("team-a", "storer")), 0);
        for i in 0..CAPACITY + 10 {
            w.wait(r, request("team-a", &format!("r{i}")), w.ticket());
        }
        assert_eq!(w.len(), CAPACITY);
    }
}
