//! A model of the Kubernetes API server, behind a real `kube::Client`: it keeps objects
//! with resourceVersion, generation, uid, the status subresource, finalizers and deletion
//! timestamps, garbage-collects what an owner reference ties to a deleted object, applies
//! server-side apply, JSON and merge patches, label-selected lists, and injects faults
//! (errors before or after a write is applied, conflicts) from a seeded generator.
//!
//! Not modelled: watches (the simulation calls the reconciler itself, as a controller's
//! requeues would), field ownership (the operator is the only manager of its objects) and
//! admission.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// (resource plural, namespace, name).
pub type Key = (String, String, String);

/// What may go wrong with a write, per mille.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Answered 500 without applying.
    pub error_before: u32,
    /// Applied, then answered 500 (a lost response).
    pub error_after: u32,
    /// Answered 409 without applying.
    pub conflict: u32,
}

pub struct State {
    pub objects: BTreeMap<Key, Value>,
    version: u64,
    uids: u64,
    pub faults: Faults,
    rng: u64,
    /// Writes answered with an injected fault.
    pub injected: u64,
    /// Every change, for watches.
    log: Vec<Change>,
    /// Open watches: each gets every change as it happens.
    watchers: Vec<tokio::sync::mpsc::UnboundedSender<Change>>,
}

/// A change of an object: (resourceVersion, plural, namespace, ADDED | MODIFIED | DELETED,
/// the object).
type Change = (u64, String, String, &'static str, Value);

impl State {
    /// Stores an object and tells the watches.
    fn store(&mut self, key: Key, obj: Value) {
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.changed(&key, kind, obj.clone());
        self.objects.insert(key, obj);
    }

    /// Removes an object and tells the watches.
    fn forget(&mut self, key: &Key) -> Option<Value> {
        let obj = self.objects.remove(key)?;
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = json!(self.next_version());
        self.changed(key, "DELETED", gone);
        Some(obj)
    }

    fn changed(&mut self, key: &Key, kind: &'static str, obj: Value) {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.version);
        let event = (rv, key.0.clone(), key.1.clone(), kind, obj);
        self.watchers.retain(|w| w.send(event.clone()).is_ok());
        self.log.push(event);
    }

    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn roll(&mut self, per_mille: u32) -> bool {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r % 1000) < u64::from(per_mille)
    }
}

#[derive(Clone)]
pub struct ApiServer {
    pub state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

/// `labelSelector=k=v,k2=v2` of a query (equality only).
fn selector(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("labelSelector="))
        .flat_map(|s| {
            let s = s
                .replace("%3D", "=")
                .replace("%2F", "/")
                .replace("%2C", ",");
            s.split(',')
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn matches(obj: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v))
}

/// Whether an object of `key` is in a request's scope (`ns` empty: every namespace).
fn in_scope(key: &Key, plural: &str, ns: &str) -> bool {
    key.0 == plural && (ns.is_empty() || key.1 == ns)
}

fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn now() -> String {
    flink_rs_operator::clock::now()
}

/// RFC 7386.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl ApiServer {
    pub fn new(seed: u64) -> Self {
        ApiServer {
            state: Arc::new(Mutex::new(State {
                objects: BTreeMap::new(),
                version: 100,
                uids: 0,
                faults: Faults::default(),
                rng: seed | 1,
                injected: 0,
                log: Vec::new(),
                watchers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client of this server, as the operator gets one.
    pub fn client(&self) -> kube::Client {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().to_string();
                let uri = req.uri().clone();
                let ct = req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (code, answer) = me.handle(&method, uri.path(), uri.query(), &ct, body);
                let resp = Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                    .expect("response");
                send.send_response(resp);
            }
        });
        kube::Client::new(svc, "default")
    }

    /// Serves the model over HTTP on 127.0.0.1 (watches included: `?watch=true` streams
    /// the changes after the given resourceVersion as JSON lines); a client of it.
    pub async fn serve(&self) -> kube::Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the API server model");
        let addr = listener.local_addr().expect("address");
        let app = axum::Router::new()
            .fallback(http_request)
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url: http::Uri = format!("http://{addr}").parse().expect("url");
        let config = kube::Config::new(url);
        kube::Client::try_from(config).expect("client")
    }

    /// A watch: what changed after `resourceVersion`, then every change as it happens,
    /// until `timeoutSeconds`.
    fn watch(&self, path: &str, query: Option<&str>) -> axum::response::Response {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest: &[&str] = match parts.first() {
            Some(&"api") => &parts[2..],
            _ => &parts[3.min(parts.len())..],
        };
        let (ns, plural) = match rest {
            [plural] => (String::new(), plural.to_string()),
            ["namespaces", ns, plural] => (ns.to_string(), plural.to_string()),
            _ => return axum::response::IntoResponse::into_response(http::StatusCode::NOT_FOUND),
        };
        let selector = selector(query);
        let from: u64 = query_value(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout: u64 = query_value(query, "timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let mut st = self.lock();
            for e in st.log.iter().filter(|e| e.0 > from) {
                let _ = tx.send(e.clone());
            }
            st.watchers.push(tx);
        }
        let (out_tx, out_rx) =
            tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::convert::Infallible>>(64);
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
            loop {
                let e = tokio::select! {
                    e = rx.recv() => e,
                    _ = tokio::time::sleep_until(until) => None,
                };
                let Some((_, p, n, kind, obj)) = e else { break };
                let key = (p, n, String::new());
                if !in_scope(&key, &plural, &ns) || !matches(&obj, &selector) {
                    continue;
                }
                let mut line = json!({ "type": kind, "object": obj }).to_string();
                line.push('\n');
                if out_tx.send(Ok(bytes::Bytes::from(line))).await.is_err() {
                    break;
                }
            }
        });
        let body =
            axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out_rx));
        axum::response::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap_or_default()
    }

    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(plural.into(), ns.into(), name.into()))
            .cloned()
    }

    pub fn list(&self, plural: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `kubectl apply` of a new object (or a spec change of an existing one).
    pub fn put(&self, plural: &str, mut obj: Value) {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut st = self.lock();
        let key = (plural.to_string(), ns, name);
        let version = st.next_version();
        match st.objects.get(&key).cloned() {
            Some(mut old) => {
                if old["spec"] != obj["spec"] {
                    let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    old["metadata"]["generation"] = json!(g);
                }
                old["spec"] = obj["spec"].take();
                old["metadata"]["resourceVersion"] = json!(version);
                st.store(key, old);
            }
            None => {
                st.uids += 1;
                obj["metadata"]["uid"] = json!(format!("uid-{}", st.uids));
                obj["metadata"]["generation"] = json!(1);
                obj["metadata"]["resourceVersion"] = json!(version);
                obj["metadata"]["creationTimestamp"] = json!(now());
                st.store(key, obj);
            }
        }
    }

    /// Writes an object as a controller of the model (the kubelet's pods).
    pub fn put_raw(&self, plural: &str, ns: &str, name: &str, mut obj: Value) {
        let mut st = self.lock();
        obj["metadata"]["resourceVersion"] = json!(st.next_version());
        st.store((plural.into(), ns.into(), name.into()), obj);
    }

    pub fn remove_raw(&self, plural: &str, ns: &str, name: &str) {
        self.lock().forget(&(plural.into(), ns.into(), name.into()));
    }

    /// `kubectl delete`: with finalizers, a deletion timestamp; else gone, and what it owns.
    pub fn delete(&self, plural: &str, ns: &str, name: &str) {
        let mut st = self.lock();
        let key = (plural.to_string(), ns.to_string(), name.to_string());
        let Some(mut obj) = st.objects.get(&key).cloned() else {
            return;
        };
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now());
            obj["metadata"]["resourceVersion"] = json!(st.next_version());
        }
        st.store(key.clone(), obj);
        Self::finish_deletion(&mut st, &key);
    }

    /// Removes an object being deleted once its finalizers are gone, then collects garbage.
    fn finish_deletion(st: &mut State, key: &Key) {
        let Some(obj) = st.objects.get(key) else {
            return;
        };
        let empty = obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        if obj["metadata"]["deletionTimestamp"].is_null() || !empty {
            return;
        }
        let uid = obj["metadata"]["uid"].clone();
        st.forget(key);
        let owned: Vec<Key> = st
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in owned {
            if let Some(o) = st.objects.get_mut(&k) {
                o["metadata"]["deletionTimestamp"] = json!(now());
            }
            Self::finish_deletion(st, &k);
        }
    }

    fn handle(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        content_type: &str,
        body: Value,
    ) -> (u16, Value) {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // /api/v1/namespaces/NS/PLURAL[/NAME[/status]] or /apis/G/V/namespaces/NS/...
        let rest = match parts.first() {
            Some(&"api") => &parts[2..],
            Some(&"apis") => &parts[3..],
            _ => return status(404, "NotFound", format!("no route {path}")),
        };
        let (ns, plural, name, sub) = match rest {
            // Cluster-wide lists: every namespace.
            [plural] => ("", *plural, None, None),
            ["namespaces", ns, plural] => (*ns, *plural, None, None),
            ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name), None),
            ["namespaces", ns, plural, name, sub] => (*ns, *plural, Some(*name), Some(*sub)),
            _ => return status(404, "NotFound", format!("no route {path}")),
        };
        let mut st = self.lock();
        let write = method != "GET";
        if write {
            let f = st.faults;
            if st.roll(f.error_before) {
                st.injected += 1;
                return status(500, "InternalError", "injected: before the write".into());
            }
            if st.roll(f.conflict) {
                st.injected += 1;
                return status(409, "Conflict", "injected: conflict".into());
            }
        }
        let key = (
            plural.to_string(),
            ns.to_string(),
            name.unwrap_or_default().to_string(),
        );
        let answer = match (method, name) {
            ("GET", None) => {
                let selector = selector(query);
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, o)| in_scope(k, plural, ns) && matches(o, &selector))
                    .map(|(_, o)| o.clone())
                    .collect();
                (
                    200,
                    json!({ "kind": "List", "apiVersion": "v1",
                            "metadata": { "resourceVersion": st.version.to_string() },
                            "items": items }),
                )
            }
            ("GET", Some(n)) => match st.objects.get(&key) {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound", format!("{plural} \"{n}\" not found")),
            },
            ("POST", _) => {
                let mut obj = body;
                let name = match obj["metadata"]["name"].as_str() {
                    Some(n) => n.to_string(),
                    None => {
                        let g = obj["metadata"]["generateName"].as_str().unwrap_or("obj-");
                        format!("{g}{}", st.version + 1)
                    }
                };
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["namespace"] = json!(ns);
                obj["metadata"]["resourceVersion"] = json!(st.next_version());
                st.store((plural.into(), ns.into(), name), obj.clone());
                (201, obj)
            }
            ("PATCH", Some(n)) => Self::patch(&mut st, &key, n, sub, content_type, body),
            _ => status(405, "MethodNotAllowed", format!("{method} {path}")),
        };
        if write && answer.0 < 300 {
            Self::finish_deletion(&mut st, &key);
            let f = st.faults;
            if st.roll(f.error_after) {
                st.injected += 1;
                return status(500, "InternalError", "injected: after the write".into());
            }
        }
        answer
    }

    fn patch(
        st: &mut State,
        key: &Key,
        name: &str,
        sub: Option<&str>,
        content_type: &str,
        body: Value,
    ) -> (u16, Value) {
        let existing = st.objects.get(key).cloned();
        let mut obj = match (existing, content_type.contains("apply-patch")) {
            (Some(o), _) => o,
            (None, true) if sub.is_none() => {
                st.uids += 1;
                json!({
                    "apiVersion": body["apiVersion"], "kind": body["kind"],
                    "metadata": {
                        "name": name, "namespace": key.1,
                        "uid": format!("uid-{}", st.uids), "generation": 0,
                        "creationTimestamp": now(),
                    },
                })
            }
            (None, _) => return status(404, "NotFound", format!("{} \"{name}\" not found", key.0)),
        };
        let before = obj.clone();
        if content_type.contains("apply-patch") {
            let want = &body["metadata"]["resourceVersion"];
            if !want.is_null() && *want != obj["metadata"]["resourceVersion"] {
                return status(
                    409,
                    "Conflict",
                    format!("the object has been modified; resourceVersion {want} is stale"),
                );
            }
            match sub {
                Some("status") => obj["status"] = body["status"].clone(),
                _ => {
                    for (k, v) in body.as_object().into_iter().flatten() {
                        if k == "metadata" {
                            for m in ["labels", "annotations", "ownerReferences"] {
                                if !v[m].is_null() {
                                    obj["metadata"][m] = v[m].clone();
                                }
                            }
                        } else if k != "status" {
                            obj[k] = v.clone();
                        }
                    }
                }
            }
        } else if content_type.contains("json-patch") {
            let patch: json_patch::Patch = match serde_json::from_value(body) {
                Ok(p) => p,
                Err(e) => return status(400, "BadRequest", e.to_string()),
            };
            if let Err(e) = json_patch::patch(&mut obj, &patch) {
                return status(422, "Invalid", e.to_string());
            }
        } else {
            merge_patch(&mut obj, &body);
        }
        if obj != before {
            if sub.is_none() && obj["spec"] != before["spec"] {
                let g = before["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                obj["metadata"]["generation"] = json!(g);
            }
            obj["metadata"]["resourceVersion"] = json!(st.next_version());
        }
        st.store(key.clone(), obj.clone());
        (200, obj)
    }
}

/// Every HTTP request to the model.
async fn http_request(
    axum::extract::State(api): axum::extract::State<ApiServer>,
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    let query = uri.query();
    let watching =
        method == http::Method::GET && matches!(query_value(query, "watch"), Some("true" | "1"));
    if watching {
        return api.watch(uri.path(), query);
    }
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (code, answer) = api.handle(method.as_str(), uri.path(), query, &ct, body);
    axum::response::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(
            serde_json::to_vec(&answer).unwrap_or_default(),
        ))
        .unwrap_or_default()
}
