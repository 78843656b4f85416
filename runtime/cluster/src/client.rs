//! `flink-rs job …`: the command line against a jobmanager's REST API.

use std::time::{Duration, Instant};

use flink_rs_rest_api as api;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use crate::client_error::ClientError;

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A REST client of one jobmanager (`http://host:8081`).
pub struct RestClient {
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    /// Sent as `Authorization: Bearer …` when the jobmanager requires it.
    token: Option<String>,
}

impl RestClient {
    fn unreachable(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        }
    }
}

impl RestClient {
    pub fn new(base: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Setup(format!("starting its runtime: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(RestClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            rt,
            token: None,
        })
    }

    /// Talks HTTPS to a jobmanager whose REST API has TLS on (`security.ssl.rest.enabled`):
    /// its certificate must chain to `truststore` (PEM) and name the URL's host; `keystore`
    /// (a PEM private key and certificate chain) is presented when the jobmanager requires
    /// client certificates (`security.ssl.rest.authentication-enabled`).
    pub fn with_tls(mut self, truststore: &str, keystore: Option<&str>) -> Result<Self> {
        let tls = crate::tls::rest_client_config(truststore, keystore)
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        self.http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(self)
    }

    /// Sends `token` with every request (`rest.authentication.token-file` of the jobmanager).
    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request; a non-2xx answer becomes an error carrying Flink's `errors` text.
    fn call(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let req = self.authorized(req);
        self.rt.block_on(async {
            let resp = req.send().await.map_err(|e| self.unreachable(e))?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| self.unreachable(e))?;
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if status.is_success() {
                Ok(v)
            } else {
                let msg = v
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|e| e.as_str().unwrap_or_default().to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_else(|| v.to_string());
                Err(ClientError::Refused {
                    code: status.as_u16(),
                    status: status.to_string(),
                    message: msg,
                })
            }
        })
    }

    /// Any request, answered as (status code, JSON or text body): for contract tests.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<(u16, Value)> {
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| ClientError::Setup(format!("method `{method}`: {e}")))?;
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.base))
            .body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let req = self.authorized(req);
        self.rt.block_on(async {
            let resp = req.send().await.map_err(|e| self.unreachable(e))?;
            let status = resp.status().as_u16();
            let text = resp.text().await.map_err(|e| self.unreachable(e))?;
            Ok((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        })
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.call(self.http.get(format!("{}{path}", self.base)))
    }

    /// `GET path`, read as the REST API's type `T`.
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        typed(self.get(path)?)
    }

    /// `GET /jobs/overview`.
    pub fn jobs(&self) -> Result<api::JobsOverview> {
        self.get_as("/jobs/overview")
    }

    pub fn submit(&self, script: &str, settings: &[(String, String)]) -> Result<String> {
        let body = api::SubmitRequest {
            sql: script.to_string(),
            settings: settings.iter().cloned().collect(),
        };
        let v = self.call(self.http.post(format!("{}/jobs", self.base)).json(&body))?;
        Ok(typed::<api::SubmitResponse>(v)?.jobid)
    }

    pub fn cancel(&self, id: &str) -> Result<()> {
        self.call(
            self.http
                .patch(format!("{}/jobs/{id}?mode=cancel", self.base)),
        )
        .map(|_| ())
    }

    /// Takes a savepoint (or stops with one) and waits for its location.
    pub fn savepoint(
        &self,
        id: &str,
        dir: Option<&str>,
        stop: bool,
        wait: Duration,
    ) -> Result<String> {
        let req = if stop {
            self.http
                .post(format!("{}/jobs/{id}/stop", self.base))
                .json(&api::StopRequest {
                    target_directory: dir.map(str::to_string),
                    trigger_id: None,
                })
        } else {
            self.http
                .post(format!("{}/jobs/{id}/savepoints", self.base))
                .json(&api::SavepointRequest {
                    target_directory: dir.map(str::to_string),
                    cancel_job: false,
                    trigger_id: None,
                })
        };
        let rid = typed::<api::TriggerResponse>(self.call(req)?)?.request_id;
        let until = Instant::now() + wait;
        loop {
            let s: api::OperationStatus = self.get_as(&format!("/jobs/{id}/savepoints/{rid}"))?;
            match s.outcome() {
                Some(Ok(location)) => return Ok(location),
                Some(Err(cause)) => return Err(ClientError::SavepointFailed(cause)),
                None => {}
            }
            if Instant::now() > until {
                return Err(ClientError::SavepointTimeout {
                    request: rid,
                    waited: wait,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// An answer read as the REST API's type `T`; one that does not fit names what was expected.
fn typed<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value::<T>(v.clone()).map_err(|e| ClientError::UnexpectedAnswer {
        expected: std::any::type_name::<T>(),
        message: e.to_string(),
        body: v.to_string(),
    })
}
