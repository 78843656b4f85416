//! Leader election against kube's mock API service: create, wait while another holds a
//! fresh lease, take over an expired one, renew one's own, lose a compare-and-swap race.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use flink_rs_operator::lease::LeaseLock;

/// Serves the scripted answers in order; returns the requests seen.
async fn scripted(
    answers: Vec<(u16, Value)>,
    f: impl AsyncFnOnce(LeaseLock) -> bool,
) -> (bool, Vec<(String, String, Value)>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (code, body) in answers {
            let Some((req, send)) = handle.next_request().await else {
                break;
            };
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            seen.push((
                method,
                path,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ));
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&body).expect("json")))
                    .expect("response"),
            );
        }
        seen
    });
    let client = kube::Client::new(svc, "ops");
    let lock = LeaseLock::new(client, "ops", "leader", "me", Duration::from_secs(15));
    let got = tokio::time::timeout(Duration::from_secs(5), f(lock))
        .await
        .expect("hangs");
    (got, server.await.expect("server"))
}

fn lease(holder: &str, renewed: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "leader", "namespace": "ops", "resourceVersion": "42" },
        "spec": { "holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "leaseTransitions": 3 },
    })
}

fn not_found() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" })
}

fn conflict() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "changed" })
}

fn now_rfc3339(offset_s: i64) -> String {
    let t = k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::from_secs(offset_s);
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[tokio::test]
async fn creates_a_missing_lease() {
    let (got, seen) = scripted(
        vec![(404, not_found()), (201, lease("me", &now_rfc3339(0)))],
        async |l| l.try_acquire().await.expect("acquire"),
    )
    .await;
    assert!(got);
    assert_eq!(seen[1].0, "POST");
    assert_eq!(seen[1].2["spec"]["holderIdentity"], "me");
}

#[tokio::test]
async fn waits_while_another_holds_a_fresh_lease() {
    let (got, seen) = scripted(vec![(200, lease("other", &now_rfc3339(-2)))], async |l| {
        l.try_acquire().await.expect("acquire")
    })
    .await;
    assert!(!got);
    assert_eq!(seen.len(), 1, "no write: {seen:?}");
}

#[tokio::test]
async fn takes_over_an_expired_lease_with_compare_and_swap() {
    let (got, seen) = scripted(
        vec![
            (200, lease("other", &now_rfc3339(-60))),
            (200, lease("me", &now_rfc3339(0))),
        ],
        async |l| l.try_acquire().await.expect("acquire"),
    )
    .await;
    assert!(got);
    let (method, _, body) = &seen[1];
    assert_eq!(method, "PUT");
    assert_eq!(
        body["metadata"]["resourceVersion"], "42",
        "compare-and-swap"
    );
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseTransitions"], 4);
}

#[tokio::test]
async fn renews_its_own_lease_and_loses_a_race() {
    let (got, seen) = scripted(
        vec![
            (200, lease("me", &now_rfc3339(-5))),
            (200, lease("me", &now_rfc3339(0))),
        ],
        async |l| l.try_acquire().await.expect("acquire"),
    )
    .await;
    assert!(got);
    assert_eq!(
        seen[1].2["spec"]["leaseTransitions"], 3,
        "a renewal is no transition"
    );
    let (got, _) = scripted(
        vec![(200, lease("other", &now_rfc3339(-60))), (409, conflict())],
        async |l| l.try_acquire().await.expect("acquire"),
    )
    .await;
    assert!(!got, "another replica took it first");
}
