//! The controllers the operator runs: one per watched namespace (or one for all), each
//! watching FlinkJobs and the objects they own, calling [`super::reconcile`] on every change
//! and requeue. In the library so that the simulation runs exactly what the binary runs.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;

use super::{Context, error_policy, reconcile};
use crate::crd::FlinkJob;

/// The label selector of the objects the operator owns: only those are watched, not every
/// ConfigMap of the cluster.
pub const OWNED: &str = "app.kubernetes.io/managed-by=flink-rs-operator";

/// Runs the controllers of `namespaces` (all when empty) until they stop (on SIGTERM or
/// Ctrl-C when `on_signal`).
pub async fn run_controllers(
    client: kube::Client,
    ctx: Arc<Context>,
    namespaces: &[String],
    on_signal: bool,
) {
    let scopes: Vec<Option<&String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(Some).collect()
    };
    let mut controllers = Vec::new();
    for ns in scopes {
        let (jobs, cms, svcs, deps) = match ns {
            None => (
                Api::<FlinkJob>::all(client.clone()),
                Api::<ConfigMap>::all(client.clone()),
                Api::<Service>::all(client.clone()),
                Api::<Deployment>::all(client.clone()),
            ),
            Some(n) => (
                Api::<FlinkJob>::namespaced(client.clone(), n),
                Api::<ConfigMap>::namespaced(client.clone(), n),
                Api::<Service>::namespaced(client.clone(), n),
                Api::<Deployment>::namespaced(client.clone(), n),
            ),
        };
        tracing::info!(
            namespace = ns.map(String::as_str).unwrap_or("<all>"),
            "watching FlinkJobs"
        );
        let owned = watcher::Config::default().labels(OWNED);
        let mut controller = Controller::new(jobs, watcher::Config::default())
            .owns(cms, owned.clone())
            .owns(svcs, owned.clone())
            .owns(deps, owned);
        if on_signal {
            controller = controller.shutdown_on_signal();
        }
        let ctx = ctx.clone();
        controllers.push(tokio::spawn(
            controller
                .run(reconcile, error_policy, ctx)
                .for_each(|r| async move {
                    match r {
                        Ok((obj, _)) => tracing::debug!(object = %obj.name, "reconciled"),
                        Err(e) => tracing::debug!(error = %e, "reconcile error"),
                    }
                }),
        ));
    }
    for c in controllers {
        let _ = c.await;
    }
}
