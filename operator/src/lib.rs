//! # flink_rs_operator: FlinkJob resources reconciled into running, self-healing jobs
//!
//! Layout:
//! - [`crd`]: the `FlinkJob` resource; [`validate`]: what its schema cannot check;
//! - [`resources`]: the objects a FlinkJob owns, pure functions of the FlinkJob and its plan;
//! - [`jm`]: the jobmanager REST client, [`job_state`]: the job's state as a type;
//! - [`reconcile`]: the controller ([`reconcile::decide`] is its pure decision);
//! - [`lease`]: leader election, [`metrics`]: the operator's own metrics, [`clock`]: times
//!   as status writes them.
//!
//! The operator talks to jobmanagers over their REST API only; it does not link the engine.

pub mod clock;
pub mod crd;
pub mod jm;
pub mod job_state;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod resources;
pub mod validate;

/// Selects rustls's `ring` provider for the Kubernetes client. Needed once per process
/// before the first client: a build that also links the engine (the image builds both
/// binaries in one invocation) compiles rustls with two providers, and rustls then refuses
/// to guess. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
