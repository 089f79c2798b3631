//! Property tests: arbitrary specs, statuses, outcomes and Secrets through the pure steps of
//! planning and status building. Whatever a tenant writes, these return; they never panic.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use proptest::prelude::*;

use super::decide::{self, Next, Outcome, Rescan, StoredReport};
use super::plan::{RESCAN_AFTER_MAX, RESCAN_AFTER_MIN, parse_rescan_after};
use super::status::{self, k8s_time};
use crate::api::{
    PendingRescan, ReportPhase, ScanRequest, ScanRequestStatus, ScannerAuth, ScannerAuthType,
    SeveritySummary,
};
use crate::identity::{Digest, MimeType, ReportKey};
use crate::store::ReportMeta;

/// Any instant chrono can hold.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        (min..=max).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        (1_700_000_000i64..1_900_000_000)
            .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
    ]
}

fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,12}(ns|us|ms|s|m|h)",
        "([0-9]{1,9}h){1,8}",
        "[0-9.a-zµ+ -]{0,70}",
        Just("3000000000h".to_owned()),
        Just("8760h".to_owned()),
        Just("8761h".to_owned()),
    ]
}

fn phase() -> impl Strategy<Value = ReportPhase> {
    prop_oneof![
        Just(ReportPhase::Pending),
        Just(ReportPhase::Scanning),
        Just(ReportPhase::Rescanning),
        Just(ReportPhase::Ready),
        Just(ReportPhase::Failed),
    ]
}

fn meta(generated_at: DateTime<Utc>, count: i64) -> ReportMeta {
    ReportMeta {
        id: uuid::Uuid::nil(),
        digest: String::new(),
        registration_uuid: uuid::Uuid::nil(),
        mime_type: String::new(),
        summary: SeveritySummary {
            critical: count,
            high: count,
            medium: count,
            low: count,
            unknown: count,
            none: count,
            fixable: count,
        },
        scanner_name: String::new(),
        scanner_vendor: String::new(),
        scanner_version: String::new(),
        generated_at,
        created_at: generated_at,
        updated_at: generated_at,
    }
}

fn outcome() -> impl Strategy<Value = Outcome> {
    (
        phase(),
        proptest::option::of((instant(), any::<i64>())),
        proptest::option::of(".{0,40}"),
        proptest::option::of(any::<u64>()),
        prop_oneof![
            Just("application/vnd.security.vulnerability.report; version=1.1"),
            Just("application/vnd.scanner.adapter.vuln.report.raw"),
        ],
    )
        .prop_map(|(phase, stored, message, requeue, mime)| Outcome {
            key: ReportKey {
                digest: Digest::parse(&format!("sha256:{}", "a".repeat(64)))
                    .unwrap_or_else(|_| unreachable!()),
                registration_uuid: uuid::Uuid::nil(),
                mime_type: MimeType::parse(mime).unwrap_or_else(|_| unreachable!()),
            },
            platform: None,
            phase,
            meta: stored.map(|(t, n)| meta(t, n)),
            message,
            requeue: requeue.map(Duration::from_millis),
        })
}

fn secret_data() -> impl Strategy<Value = BTreeMap<String, ByteString>> {
    proptest::collection::btree_map(
        prop_oneof![
            Just(".dockerconfigjson".to_owned()),
            Just(".dockercfg".to_owned()),
            Just("username".to_owned()),
            Just("password".to_owned()),
            Just("token".to_owned()),
            Just("apiKey".to_owned()),
            "[a-zA-Z.]{1,12}",
        ],
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            r#"\{"auths":\{"[a-z:/.0-9]{0,20}":\{("auth":"[A-Za-z0-9+/=:]{0,20}"|"username":".{0,8}","password":".{0,8}")\}\}\}"#
                .prop_map(String::into_bytes),
            r#"\{"[a-z:/.0-9]{0,20}":\{"auth":"[A-Za-z0-9+/=:]{0,20}"\}\}"#.prop_map(String::into_bytes),
        ]
        .prop_map(ByteString),
        0..5,
    )
}

fn secret_type() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just("kubernetes.io/dockerconfigjson".to_owned()),
        Just("kubernetes.io/dockercfg".to_owned()),
        Just("kubernetes.io/basic-auth".to_owned()),
        Just("Opaque".to_owned()),
        ".{0,20}",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn rescan_after_is_bounded_or_an_error_naming_the_field_and_freshness_never_panics(
        raw in duration_text(),
        now in instant(),
        last_scan in proptest::option::of(instant()),
        requested_at in instant(),
        stored in any::<bool>(),
    ) {
        let rescan_after = match parse_rescan_after(&raw) {
            Ok(d) => {
                prop_assert!((RESCAN_AFTER_MIN..=RESCAN_AFTER_MAX).contains(&d));
                Some(d)
            }
            Err(e) => {
                prop_assert!(e.to_string().starts_with("spec.rescanAfter: "), "{}", e);
                prop_assert!(e.is_permanent());
                None
            }
        };
        for rescan in [Rescan::Settled, Rescan::Wanted { token: "t".into(), requested_at }] {
            let needed = decide::needed_after(rescan_after, &rescan, now);
            if let StoredReport::Fresh { requeue: Some(after) } =
                decide::stored_report(stored, last_scan, needed, rescan_after, now)
            {
                let delay = Next::Soon(after).delay();
                prop_assert!(delay.is_some_and(|d| d <= decide::MAX_REQUEUE.mul_f64(1.1)));
            }
        }
    }

    #[test]
    fn any_status_and_outcomes_settle_into_a_status_without_panicking(
        outcomes in proptest::collection::vec(outcome(), 0..4),
        token in proptest::option::of(".{0,10}"),
        previous_token in proptest::option::of(".{0,10}"),
        pending in proptest::option::of((".{0,10}", instant())),
        generation in proptest::option::of(any::<i64>()),
        observed in proptest::option::of(any::<i64>()),
        now in instant(),
        recheck in any::<u64>(),
    ) {
        let mut sr = super::decide::tests::fixture("new.yaml");
        sr.spec.rescan_token = token.clone();
        sr.metadata.generation = generation;
        sr.status = Some(ScanRequestStatus {
            observed_generation: observed,
            rescan_token: previous_token,
            pending_rescan: pending.map(|(token, t)| PendingRescan { token, requested_at: k8s_time(t) }),
            reports: outcomes.iter().map(status::report_status).collect(),
            ..ScanRequestStatus::default()
        });
        let rescan = match decide::rescan_demand(token.as_deref(), sr.status.as_ref()) {
            decide::RescanDemand::Known(r) => r,
            decide::RescanDemand::NewToken(token) => Rescan::Wanted {
                token,
                requested_at: decide::token_requested_at(now),
            },
        };
        let (status, next) = status::settle(
            &sr as &ScanRequest,
            uuid::Uuid::nil(),
            &rescan,
            &outcomes,
            None,
            Duration::from_millis(recheck),
            now,
        );
        prop_assert_eq!(status.reports.len(), outcomes.len());
        prop_assert_eq!(status.observed_generation, generation);
        let _ = next.action();
        // A status written before feeds the next reconcile.
        sr.status = Some(status);
        let _ = decide::rescan_demand(token.as_deref(), sr.status.as_ref());
    }

    #[test]
    fn any_registry_secret_is_credentials_or_an_error(
        secret_type in secret_type(),
        data in secret_data(),
        registry in prop_oneof![
            Just("https://registry.example.test".to_owned()),
            Just("http://127.0.0.1:5000".to_owned()),
            ".{0,30}",
        ],
    ) {
        let host = crate::registry::credentials::registry_host(&registry).unwrap_or_default();
        let _ = crate::registry::credentials::RegistryCredentials::from_parts(
            "s", secret_type.as_deref(), &data, &host,
        );
    }

    #[test]
    fn any_scanner_auth_secret_is_credentials_or_an_error(
        auth_type in prop_oneof![
            Just(ScannerAuthType::None),
            Just(ScannerAuthType::Basic),
            Just(ScannerAuthType::Bearer),
            Just(ScannerAuthType::ApiKey),
        ],
        header in proptest::option::of(".{0,20}"),
        data in proptest::option::of(secret_data()),
    ) {
        let auth = ScannerAuth { auth_type, secret_ref: None, header };
        let _ = super::credentials::adapter_credentials(Some(&auth), data.as_ref());
    }
}
