//! End-to-end tests of flink-rs against a real Kubernetes cluster: see `tests/kube.rs`.
