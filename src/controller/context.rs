//! State every reconcile shares: the settings ([`Config`]), the clients ([`Context`]), the
//! per-object failure backoff and Event publishing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use rand::Rng;

use super::adapters::{Adapter, Adapters};
use crate::api::ScanRequest;
use crate::jobs::Leases;
use crate::metrics::Metrics;
use crate::store::Store;

/// Field manager of every write; also the Events' reporting controller.
pub const MANAGER: &str = "scanreport-operator";

/// Settings of the controller (flags of `scanreport-operator run`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub concurrency: u16,
    pub default_max_in_flight: i32,
    pub metadata_ttl: Duration,
    /// How long a submitted scan may run before it is presumed lost and resubmitted.
    pub scan_timeout: Duration,
    /// How often a queued request checks for a free scan slot.
    pub queue_poll: Duration,
    /// How long to wait before retrying a permanently failed scan or stalled request.
    pub stall_recheck: Duration,
    /// Unique per process: holder of scan claims.
    pub instance: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            concurrency: 16,
            default_max_in_flight: 4,
            metadata_ttl: Duration::from_secs(300),
            scan_timeout: Duration::from_secs(30 * 60),
            queue_poll: Duration::from_secs(2),
            stall_recheck: Duration::from_secs(300),
            instance: format!("scanreport-operator-{:016x}", rand::random::<u64>()),
        }
    }
}

/// State shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub store: Store,
    pub adapters: Adapters,
    pub recorder: Recorder,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object.
    pub backoff: Backoff,
}

impl Context {
    pub fn new(client: Client, store: Store, config: Config, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(config.instance.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            adapters: Adapters::new(
                client.clone(),
                config.metadata_ttl,
                config.default_max_in_flight,
            ),
            client,
            store,
            config,
            metrics,
            backoff: Backoff::default(),
        }
    }

    pub(super) fn leases(&self, adapter: &Adapter) -> Leases {
        Leases {
            // Long enough for one POST /scan with its timeout, then others may take over.
            claim: adapter.request_timeout * 2 + Duration::from_secs(1),
            scan: self.config.scan_timeout,
            queue: self.config.queue_poll * 10 + Duration::from_secs(30),
        }
    }

    /// Publishes an Event in the background, as client-go's recorder does: a slow or failing
    /// Events API never holds up a reconcile.
    ///
    /// The Recorder merges Events of one object by reason and action into a series, keeping
    /// the first note; `action` therefore names what the Event is about (e.g. the report MIME
    /// type), so that the Events of two reports of one request stay apart.
    pub(super) fn event(
        &self,
        sr: &ScanRequest,
        type_: EventType,
        reason: &str,
        about: &str,
        note: String,
    ) {
        let mut action = format!("Scan {about}");
        action.truncate(128);
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action,
            secondary: None,
        };
        let (recorder, reference) = (self.recorder.clone(), sr.object_ref(&()));
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                metrics.api_error("kubernetes");
                tracing::warn!(error = %e, reason = %event.reason, "cannot publish event");
            }
        });
    }
}

/// Exponential backoff per ScanRequest, as long as it keeps failing.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<ObjectRef<ScanRequest>, u32>>,
}

impl Backoff {
    /// One more failure of `object`: how long to wait before trying again. 1 s, 2 s, 4 s … up
    /// to 256 s, times 0.5–1.0 so that objects failing together spread out.
    pub fn failed(&self, object: ObjectRef<ScanRequest>) -> Duration {
        let mut failures = self.lock();
        let n = failures.entry(object).or_insert(0);
        *n = n.saturating_add(1);
        backoff_base(*n).mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// `object` reconciled, or is gone: its next failure starts again at 1 s, and a deleted
    /// object leaves nothing behind.
    pub fn forget(&self, object: &ObjectRef<ScanRequest>) {
        self.lock().remove(object);
    }

    /// Objects with failures on record.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<ScanRequest>, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The backoff before jitter after `failures` consecutive failures: 1 s doubling up to 256 s
/// (the 5-minute cap is never reached).
fn backoff_base(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(8);
    Duration::from_secs(1 << exponent).min(Duration::from_secs(300))
}

/// Go's `time.ParseDuration` format, as the CRD pattern admits it.
pub fn parse_go_duration(raw: &str) -> Option<Duration> {
    let mut rest = raw.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_per_object_and_forgetting_an_object_drops_its_entry() {
        let backoff = Backoff::default();
        let a = ObjectRef::<ScanRequest>::new("a").within("ns");
        let b = ObjectRef::<ScanRequest>::new("b").within("ns");
        for _ in 0..6 {
            backoff.failed(a.clone());
        }
        let first_of_b = backoff.failed(b.clone());
        assert!(first_of_b <= Duration::from_secs(1), "{first_of_b:?}");
        let seventh_of_a = backoff.failed(a.clone());
        assert!(seventh_of_a >= Duration::from_secs(32), "{seventh_of_a:?}");
        assert_eq!(backoff.len(), 2);
        backoff.forget(&a);
        assert_eq!(backoff.len(), 1, "a deleted object leaves nothing behind");
        assert!(backoff.failed(a.clone()) <= Duration::from_secs(1));
        backoff.forget(&a);
        backoff.forget(&b);
        assert!(backoff.is_empty());
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_256_seconds() {
        let secs: Vec<u64> = (1..=11).map(|n| backoff_base(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256]);
        assert_eq!(backoff_base(u32::MAX), Duration::from_secs(256));
    }
}
