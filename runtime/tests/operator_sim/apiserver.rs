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
}

impl State {
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
                st.objects.insert(key, old);
            }
            None => {
                st.uids += 1;
                obj["metadata"]["uid"] = json!(format!("uid-{}", st.uids));
                obj["metadata"]["generation"] = json!(1);
                obj["metadata"]["resourceVersion"] = json!(version);
                obj["metadata"]["creationTimestamp"] = json!(now());
                st.objects.insert(key, obj);
            }
        }
    }

    /// Writes an object as a controller of the model (the kubelet's pods).
    pub fn put_raw(&self, plural: &str, ns: &str, name: &str, mut obj: Value) {
        let mut st = self.lock();
        obj["metadata"]["resourceVersion"] = json!(st.next_version());
        st.objects
            .insert((plural.into(), ns.into(), name.into()), obj);
    }

    pub fn remove_raw(&self, plural: &str, ns: &str, name: &str) {
        self.lock()
            .objects
            .remove(&(plural.into(), ns.into(), name.into()));
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
        st.objects.insert(key.clone(), obj);
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
        st.objects.remove(key);
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
                let selector: Vec<(String, String)> = query
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
                    .collect();
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| k.0 == plural && k.1 == ns)
                    .filter(|(_, o)| {
                        selector
                            .iter()
                            .all(|(k, v)| o["metadata"]["labels"][k].as_str() == Some(v))
                    })
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
                st.objects
                    .insert((plural.into(), ns.into(), name), obj.clone());
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
        st.objects.insert(key.clone(), obj.clone());
        (200, obj)
    }
}
