//! Delegated authorization: every request is checked with a `SubjectAccessReview`, so the
//! cluster's own RBAC (or whatever authorizer it runs) decides who may read which namespace's
//! reports. Decisions are cached for a few seconds, bounded in size, like the authorizer of
//! Kubernetes' own aggregated servers, so a burst of `get`s costs one review.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::authn::User;
use super::objects::GROUP;

/// What is asked: a verb on a resource of the group, in a namespace (empty: all namespaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub resource: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error(
        "cannot check access with a SubjectAccessReview: {0}; the operator needs the system:auth-delegator ClusterRole"
    )]
    Review(#[source] kube::Error),
}

const TTL: Duration = Duration::from_secs(10);
const MAX_ENTRIES: usize = 4096;

type Key = (User, Attributes);

pub struct Authorizer {
    client: kube::Client,
    cache: Mutex<HashMap<Key, (bool, Instant)>>,
}

impl Authorizer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn allowed(&self, user: &User, attrs: &Attributes) -> Result<bool, AuthzError> {
        let key = (user.clone(), attrs.clone());
        if let Some(allowed) = self.cached(&key) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.to_owned()),
                    version: Some(super::objects::VERSION.to_owned()),
                    resource: Some(attrs.resource.to_owned()),
                    verb: Some(attrs.verb.to_owned()),
                    namespace: Some(attrs.namespace.clone()).filter(|n| !n.is_empty()),
                    name: Some(attrs.name.clone()).filter(|n| !n.is_empty()),
                    ..ResourceAttributes::default()
                }),
                non_resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthzError::Review)?;
        let allowed = answer
            .status
            .is_some_and(|s| s.allowed && !s.denied.unwrap_or(false));
        self.remember(key, allowed);
        Ok(allowed)
    }

    fn cached(&self, key: &Key) -> Option<bool> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(allowed, _)| *allowed)
    }

    fn remember(&self, key: Key, allowed: bool) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (_, at)| at.elapsed() < TTL);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (allowed, Instant::now()));
    }
}

/// The message Kubernetes gives for a refused request, so tools print what they always do.
pub fn forbidden_message(user: &User, attrs: &Attributes) -> String {
    let target = if attrs.name.is_empty() {
        format!("{}.{GROUP}", attrs.resource)
    } else {
        format!("{}.{GROUP} {:?}", attrs.resource, attrs.name)
    };
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace {:?}", attrs.namespace)
    };
    format!(
        "{target} is forbidden: User {:?} cannot {} resource {:?} in API group {GROUP:?} {scope}",
        user.name, attrs.verb, attrs.resource
    )
}
