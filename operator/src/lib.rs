//! # flink_rs_operator: FlinkJob resources reconciled into running, self-healing jobs
//!
//! [`crd`] defines the `FlinkJob` resource, [`validate`] what its schema cannot check,
//! [`resources`] the objects a FlinkJob owns, [`jm`] the jobmanager REST client, and
//! [`reconcile`] the controller logic. The operator talks to jobmanagers over their REST API
//! only; it does not link the engine.

pub mod crd;
pub mod jm;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod resources;
pub mod validate;
