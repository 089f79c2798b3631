//! The report API registered with the test control plane's aggregation layer: an `ExternalName`
//! Service for `localhost` (Endpoints may not hold loopback addresses) and the APIService
//! `v1alpha1.reports.scanreport.io` routed to a port on this machine. No `caBundle`: the
//! operator, run without certificate files, patches its self-signed CA in.

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
    APIService, APIServiceSpec, ServiceReference,
};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// The APIService of the report API.
pub const APISERVICE: &str = "v1alpha1.reports.scanreport.io";

/// Creates the Service `service` in `namespace` and the APIService for `localhost:port`.
pub async fn register_report_api(client: &Client, namespace: &str, service: &str, port: u16) {
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(service.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some("localhost".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &svc)
        .await
        .expect("creating the report API's ExternalName Service");
    let apiservice = APIService {
        metadata: ObjectMeta {
            name: Some(APISERVICE.into()),
            ..Default::default()
        },
        spec: Some(APIServiceSpec {
            group: Some("reports.scanreport.io".into()),
            version: Some("v1alpha1".into()),
            group_priority_minimum: 1000,
            version_priority: 15,
            service: Some(ServiceReference {
                name: Some(service.into()),
                namespace: Some(namespace.into()),
                port: Some(i32::from(port)),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<APIService>::all(client.clone())
        .create(&PostParams::default(), &apiservice)
        .await
        .expect("creating the report APIService");
}
