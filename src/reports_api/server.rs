//! The HTTP side of the report API: one handler that reads the path the way the Kubernetes API
//! lays it out, authenticates the front proxy, authorizes with a SubjectAccessReview, and answers
//! discovery, OpenAPI, `list` (metadata from the columns, no body), `get` (the body streamed
//! from PostgreSQL through a bounded channel), `watch`, and tables for `kubectl get`.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use super::authn::{AuthnError, Peer, User};
use super::authz::{Attributes, Authorizer, forbidden_message};
use super::discovery;
use super::feed::{Feed, WatchEvent};
use super::names::Kind;
use super::objects::{self, API_VERSION, GROUP, ReportObject, VERSION};
use super::selector::{self, FieldSelector};
use crate::store::{Store, StoreError};

/// Shared state of the handler.
pub struct ApiState {
    pub store: Store,
    pub feed: Arc<Feed>,
    pub authn: tokio::sync::watch::Receiver<Option<Arc<super::authn::FrontProxy>>>,
    pub authz: Authorizer,
    /// Bodies streamed at once; each holds a database connection while it streams.
    pub bodies: Arc<Semaphore>,
    pub body_chunk: usize,
    pub openapi_v3: Bytes,
    pub openapi_v3_index: Bytes,
    pub openapi_v2: Bytes,
}

/// The query parameters that matter here; the others (`limit`, `timeoutSeconds`, …) are
/// accepted and ignored, as a server that does not paginate may.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    label_selector: Option<String>,
    field_selector: Option<String>,
    watch: Option<String>,
    include_object: Option<String>,
    /// Opt-in: a `list` that carries every body (bounded by the streaming like `get`).
    include_body: Option<String>,
    resource_version: Option<String>,
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<u64>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1"))
}

pub async fn handle(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let path: Vec<&str> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if matches!(path.as_slice(), ["healthz" | "livez" | "readyz"]) {
        return (StatusCode::OK, "ok").into_response();
    }
    let user = {
        let proxy = state.authn.borrow().clone();
        let Some(proxy) = proxy else {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the report API has not loaded the front-proxy settings yet; retry shortly",
            );
        };
        match proxy.identify(&peer, &headers) {
            Ok(user) => user,
            Err(e) => return unauthorized(&e),
        }
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match path.as_slice() {
        ["apis"] if discovery::wants_aggregated(accept) => {
            json_as(discovery::aggregated_discovery(), discovery::AGGREGATED_V2)
        }
        ["apis"] => json_ok(discovery::api_group_list()),
        ["apis", g] if *g == GROUP => json_ok(discovery::api_group()),
        ["apis", g, v] if *g == GROUP && *v == VERSION => json_ok(discovery::api_resource_list()),
        ["openapi", "v2"] => raw_json(state.openapi_v2.clone()),
        ["openapi", "v3"] => raw_json(state.openapi_v3_index.clone()),
        ["openapi", "v3", "apis", g, v] if *g == GROUP && *v == VERSION => {
            raw_json(state.openapi_v3.clone())
        }
        ["apis", g, v, rest @ ..] if *g == GROUP && *v == VERSION => {
            let (namespace, plural, name) = match rest {
                [plural] => ("", *plural, None),
                ["namespaces", ns, plural] => (*ns, *plural, None),
                ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
                _ => return not_found_path(&uri),
            };
            let Some(kind) = Kind::from_plural(plural) else {
                return not_found_path(&uri);
            };
            if method != Method::GET {
                return status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    &format!(
                        "{}.{GROUP} are read-only: they are served from the report store; change the ScanRequest instead",
                        kind.plural()
                    ),
                );
            }
            let request = ResourceRequest {
                kind,
                namespace,
                name,
                params: &params,
                table: wants_table(accept),
            };
            resource(&state, &user, request).await
        }
        _ => not_found_path(&uri),
    }
}

struct ResourceRequest<'a> {
    kind: Kind,
    namespace: &'a str,
    name: Option<&'a str>,
    params: &'a Params,
    table: bool,
}

async fn resource(state: &Arc<ApiState>, user: &User, req: ResourceRequest<'_>) -> Response {
    let watching = truthy(&req.params.watch);
    let verb = match (req.name, watching) {
        (_, true) => "watch",
        (Some(_), false) => "get",
        (None, false) => "list",
    };
    let attrs = Attributes {
        verb,
        resource: req.kind.plural(),
        namespace: req.namespace.to_owned(),
        name: req.name.unwrap_or_default().to_owned(),
    };
    match state.authz.allowed(user, &attrs).await {
        Ok(true) => {}
        Ok(false) => {
            return status_details(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &forbidden_message(user, &attrs),
                req.kind,
                req.name.unwrap_or_default(),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "SubjectAccessReview failed");
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            );
        }
    }
    let labels = match req
        .params
        .label_selector
        .as_deref()
        .map(selector::parse_labels)
    {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let mut fields = match req
        .params
        .field_selector
        .as_deref()
        .map(FieldSelector::parse)
    {
        None => FieldSelector::default(),
        Some(Ok(f)) => f,
        Some(Err(e)) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    if let Some(name) = req.name
        && watching
    {
        // `GET …/name?watch=true` watches one object.
        fields = FieldSelector::parse(&format!("metadata.name={name}")).unwrap_or_default();
    }
    let filter = Filter {
        kind: req.kind,
        namespace: req.namespace.to_owned(),
        labels,
        fields,
    };
    if !state.feed.wait_synced(Duration::from_secs(5)).await {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the report API is still reading the ScanRequests; retry shortly",
        );
    }
    if watching {
        return watch(state, filter, req.params).await;
    }
    let (objects, resource_version) = match current(state, &filter).await {
        Ok(found) => found,
        Err(e) => return store_failed(&e),
    };
    match req.name {
        Some(name) => {
            let Some(object) = objects
                .into_iter()
                .find(|o| o.metadata.name.as_deref() == Some(name))
            else {
                return status_details(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{}.{GROUP} {name:?} not found", req.kind.plural()),
                    req.kind,
                    name,
                );
            };
            if req.table {
                let include = req.params.include_object.as_deref().unwrap_or("Metadata");
                return json_ok(objects::table(
                    req.kind,
                    &[object],
                    include,
                    chrono::Utc::now(),
                ));
            }
            stream_objects(state, None, vec![object]).await
        }
        None if req.table => {
            let include = req.params.include_object.as_deref().unwrap_or("Metadata");
            let mut table = objects::table(req.kind, &objects, include, chrono::Utc::now());
            table["metadata"]["resourceVersion"] = json!(resource_version);
            json_ok(table)
        }
        None if truthy(&req.params.include_body) => {
            let head = objects::list_head(req.kind, &resource_version);
            stream_objects(state, Some(head), objects).await
        }
        None => {
            let mut list = objects::list_head(req.kind, &resource_version);
            list["items"] = serde_json::to_value(&objects).unwrap_or_default();
            json_ok(list)
        }
    }
}

/// Which objects a request selects.
pub struct Filter {
    pub kind: Kind,
    /// Empty: every namespace.
    pub namespace: String,
    pub labels: Option<kube::core::Selector>,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, o: &ReportObject) -> bool {
        let ns = o.metadata.namespace.as_deref().unwrap_or_default();
        let name = o.metadata.name.as_deref().unwrap_or_default();
        o.kind == self.kind.kind()
            && (self.namespace.is_empty() || self.namespace == ns)
            && self.fields.matches(ns, name)
            && self
                .labels
                .as_ref()
                .is_none_or(|l| selector::matches(l, &o.labels()))
    }
}

/// The objects the filter selects now, with their metadata read from the columns in one
/// query, sorted by namespace and name; and the feed's resourceVersion they are as of.
async fn current(
    state: &ApiState,
    filter: &Filter,
) -> Result<(Vec<ReportObject>, String), StoreError> {
    let (references, resource_version) = state.feed.references(filter);
    let ids: Vec<Uuid> = references.iter().map(|r| r.report_id).collect();
    let metas = state.store.list_meta(&ids).await?;
    let mut objects: Vec<ReportObject> = references
        .iter()
        .filter_map(|r| metas.get(&r.report_id).map(|m| ReportObject::new(r, m)))
        .filter(|o| filter.matches(o))
        .collect();
    objects.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok((objects, resource_version.to_string()))
}

/// Sends `objects` (inside the list `head` when given) with each body streamed from the store.
async fn stream_objects(
    state: &Arc<ApiState>,
    head: Option<Value>,
    objects: Vec<ReportObject>,
) -> Response {
    let permit = match tokio::time::timeout(
        Duration::from_secs(10),
        state.bodies.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            let mut r = status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "too many report bodies are being sent at once; retry shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return r;
        }
    };
    // Two pieces in flight at most: memory stays bounded whatever the body's size.
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, StoreError>>(2);
    let store = state.store.clone();
    let chunk = state.body_chunk;
    tokio::spawn(async move {
        let _permit = permit;
        let (open, close) = match &head {
            Some(head) => {
                let mut text = head.to_string();
                text.pop(); // the closing brace of the list
                (format!("{text},\"items\":["), "]}")
            }
            None => (String::new(), ""),
        };
        if tx.send(Ok(open.into_bytes())).await.is_err() {
            return;
        }
        for (i, object) in objects.iter().enumerate() {
            let Ok((before, after)) = object.json_around_body() else {
                return;
            };
            let sep = if i > 0 { "," } else { "" };
            if tx
                .send(Ok(format!("{sep}{before}").into_bytes()))
                .await
                .is_err()
            {
                return;
            }
            let id = uuid::Uuid::parse_str(&object.report.report_id).unwrap_or_default();
            match store.stream_body(id, chunk, &tx).await {
                Ok(0) => {
                    // Deleted since the metadata was read.
                    if tx.send(Ok(b"null".to_vec())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "streaming a report body failed");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            if tx.send(Ok(after.as_bytes().to_vec())).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(close.as_bytes().to_vec())).await;
    });
    let body = Body::from_stream(ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `watch`: the events of the shared feed that the filter selects, one JSON object a line.
/// Every watcher reads the one feed; no watcher queries the database.
async fn watch(state: &Arc<ApiState>, filter: Filter, params: &Params) -> Response {
    let mut events = state.feed.subscribe();
    let since = params
        .resource_version
        .as_deref()
        .filter(|rv| !rv.is_empty() && *rv != "0");
    let initial = match since {
        None => match current(state, &filter).await {
            Ok((objects, _)) => objects,
            Err(e) => return store_failed(&e),
        },
        Some(rv) => {
            if rv.parse::<u64>().ok() != Some(state.feed.resource_version()) {
                let expired = json!({
                    "type": "ERROR",
                    "object": status_value(StatusCode::GONE, "Expired",
                        &format!("too old resource version: {rv}; list again")),
                });
                return ndjson_once(expired);
            }
            Vec::new()
        }
    };
    let timeout = Duration::from_secs(params.timeout_seconds.unwrap_or(1800).clamp(1, 3600));
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let line = |v: Value| Ok::<_, std::io::Error>(Bytes::from(format!("{v}\n")));
        for o in initial {
            if tx
                .send(line(json!({"type": "ADDED", "object": o})))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let event = tokio::select! {
                () = &mut deadline => return,
                e = events.recv() => e,
            };
            match event {
                Ok(WatchEvent { kind, object }) if filter.matches(&object) => {
                    if tx
                        .send(line(json!({"type": kind, "object": *object})))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow to keep up: end with 410 so the client lists again.
                    let _ = tx
                        .send(line(json!({"type": "ERROR", "object": status_value(
                            StatusCode::GONE, "Expired", "the watch fell behind; list again")})))
                        .await;
                    return;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn ndjson_once(v: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{v}\n"),
    )
        .into_response()
}

/// Whether `Accept` asks for `kubectl get`'s table.
fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

fn json_ok(v: Value) -> Response {
    json_as(v, "application/json")
}

fn json_as(v: Value, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], v.to_string()).into_response()
}

fn raw_json(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A `meta/v1` `Status` (kube's type) as JSON.
fn status_value(code: StatusCode, reason: &str, message: &str) -> Value {
    let s = kube::core::Status {
        status: Some(kube::core::response::StatusSummary::Failure),
        code: code.as_u16(),
        message: message.to_owned(),
        metadata: None,
        reason: reason.to_owned(),
        details: None,
    };
    let mut v = serde_json::to_value(s).unwrap_or_default();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Status");
    v
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (code, json_ok(status_value(code, reason, message))).into_response()
}

fn status_details(
    code: StatusCode,
    reason: &str,
    message: &str,
    kind: Kind,
    name: &str,
) -> Response {
    let mut v = status_value(code, reason, message);
    v["details"] = json!({ "name": name, "group": GROUP, "kind": kind.plural() });
    (code, json_ok(v)).into_response()
}

fn unauthorized(e: &AuthnError) -> Response {
    tracing::debug!(error = %e, "refused an unauthenticated request");
    status(StatusCode::UNAUTHORIZED, "Unauthorized", &e.to_string())
}

fn not_found_path(uri: &Uri) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource {}; this server serves {API_VERSION}",
            uri.path()
        ),
    )
}

fn store_failed(e: &StoreError) -> Response {
    tracing::warn!(error = %e, "report store unavailable");
    status(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "the report store is unavailable; retry shortly",
    )
}
