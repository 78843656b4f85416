//! `flink-rs-operator`: `crdgen` prints the FlinkJob CRD; `run` (the default) runs the
//! controller with leader election, a metrics endpoint and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use flink_rs_operator::crd::crd_yaml;
use flink_rs_operator::lease::LeaseLock;
use flink_rs_operator::metrics::Metrics;
use flink_rs_operator::reconcile::Context;
use flink_rs_operator::reconcile::controller::run_controllers;

/// How long the controllers get to stop after SIGTERM or Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// How long a leader's lease lasts without renewal.
const LEASE_DURATION: Duration = Duration::from_secs(15);

#[derive(Parser)]
#[command(
    name = "flink-rs-operator",
    version,
    about = "Kubernetes operator for flink-rs FlinkJobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Prints the FlinkJob CustomResourceDefinition as YAML.
    Crdgen,
    /// Runs the controller.
    Run {
        /// Namespaces to watch (comma-separated); all when empty.
        #[arg(long, env = "WATCH_NAMESPACES", default_value = "")]
        namespaces: String,
        /// Address of the metrics and health endpoint.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_address: String,
        /// Namespace of the leader-election Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// Skip leader election (a single replica).
        #[arg(long)]
        no_leader_election: bool,
        /// Give every job NetworkPolicies that admit only its own pods and this operator
        /// (whose pods carry `app.kubernetes.io/name: flink-rs-operator`).
        #[arg(long, env = "FLINKRS_NETWORK_POLICIES")]
        network_policies: bool,
        /// Where jobs may read and write files (comma-separated directories or URIs): each
        /// job gets `flink-rs.filesystem.allowed-paths` with these and its checkpoint
        /// storage. Empty: no restriction.
        #[arg(long, env = "FLINKRS_ALLOWED_PATHS", default_value = "")]
        allowed_paths: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    flink_rs_operator::install_crypto_provider();
    match cli.command.unwrap_or(Command::Run {
        namespaces: std::env::var("WATCH_NAMESPACES").unwrap_or_default(),
        metrics_address: "0.0.0.0:8080".into(),
        lease_namespace: std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into()),
        no_leader_election: false,
        network_policies: std::env::var("FLINKRS_NETWORK_POLICIES").is_ok_and(|v| v == "true"),
        allowed_paths: std::env::var("FLINKRS_ALLOWED_PATHS").unwrap_or_default(),
    }) {
        Command::Crdgen => {
            print!("{}", crd_yaml().context("rendering the CRD")?);
            Ok(())
        }
        Command::Run {
            namespaces,
            metrics_address,
            lease_namespace,
            no_leader_election,
            network_policies,
            allowed_paths,
        } => {
            run(
                namespaces,
                metrics_address,
                lease_namespace,
                no_leader_election,
                network_policies,
                &allowed_paths,
            )
            .await
        }
    }
}

/// The non-empty items of a comma-separated setting.
fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

async fn run(
    namespaces: String,
    metrics_address: String,
    lease_namespace: String,
    no_leader_election: bool,
    network_policies: bool,
    allowed_paths: &str,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());

    // Metrics and health.
    let m = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = m.clone();
                async move { m.render() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&metrics_address)
        .await
        .with_context(|| format!("binding {metrics_address}"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });

    // Leader election: wait for the lease, keep renewing it, exit when it is lost.
    if !no_leader_election {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("flink-rs-operator-{}", std::process::id()));
        let lock = LeaseLock::new(
            client.clone(),
            &lease_namespace,
            "flink-rs-operator-leader",
            &identity,
            LEASE_DURATION,
        );
        loop {
            match lock.try_acquire().await {
                Ok(true) => break,
                Ok(false) => tracing::info!("another replica leads; waiting"),
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        tracing::info!(identity = %identity, "leading");
        tokio::spawn(async move {
            // A leader that cannot renew for a lease duration may already have been
            // replaced: it steps down rather than act beside the new one.
            let mut renewed = std::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match lock.try_acquire().await {
                    Ok(true) => renewed = std::time::Instant::now(),
                    Ok(false) => {
                        tracing::error!("lost the leader lease; exiting");
                        std::process::exit(1);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the leader lease");
                        if renewed.elapsed() >= LEASE_DURATION {
                            tracing::error!(
                                "could not renew the leader lease for a lease duration; exiting"
                            );
                            std::process::exit(1);
                        }
                    }
                }
            }
        });
    }

    let mut ctx = Context::new(client.clone(), metrics);
    if network_policies {
        ctx = ctx.with_network_policies(flink_rs_operator::resources::OperatorPeer {
            namespace: lease_namespace.clone(),
            name_label: "flink-rs-operator".into(),
        });
    }
    let allowed = comma_list(allowed_paths);
    if !allowed.is_empty() {
        ctx = ctx.with_allowed_paths(allowed);
    }
    let ctx = Arc::new(ctx);
    let namespaces = comma_list(&namespaces);
    // Graceful shutdown is bounded: the controllers finish their reconciles on SIGTERM, but
    // one stuck on an unreachable API server must not hold the pod until it is killed.
    tokio::spawn(async {
        shutdown_signal().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "the controllers did not stop in time; exiting");
        std::process::exit(0);
    });
    run_controllers(client, ctx, &namespaces, true).await;
    tracing::info!("shut down");
    Ok(())
}
