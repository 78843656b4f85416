//! The operator's view of a jobmanager: its REST API (`docs/rest-api.yaml`), and nothing of
//! the engine's internals. `Fake` stands in for it in unit tests (no cluster here); the
//! end-to-end suite uses the real one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crd::CheckpointInfo;

#[derive(Debug, thiserror::Error)]
pub enum JmError {
    #[error("jobmanager at {url} unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("jobmanager at {url}: {message}")]
    Failed { url: String, message: String },
}

/// What the operator reads of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    /// RUNNING, RESTARTING, FINISHED, FAILED, CANCELED, CREATED.
    pub state: String,
    pub last_checkpoint: Option<CheckpointInfo>,
    pub failure: Option<String>,
}

/// A scripted jobmanager for tests: job states by id, savepoints it hands out, and a log of
/// the calls made.
#[derive(Debug, Default)]
pub struct FakeJm {
    pub jobs: HashMap<String, JobView>,
    pub reachable: bool,
    pub calls: Vec<String>,
    pub savepoints: u32,
}

#[derive(Clone)]
pub enum JmClient {
    Http(reqwest::Client),
    Fake(Arc<Mutex<FakeJm>>),
}

fn rfc3339(ms: i64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Now, RFC 3339.
pub fn now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    rfc3339(ms)
}

impl JmClient {
    pub fn http() -> Self {
        JmClient::Http(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        )
    }

    async fn get(c: &reqwest::Client, url: &str, path: &str) -> Result<(u16, Value), JmError> {
        let r = c
            .get(format!("{url}{path}"))
            .send()
            .await
            .map_err(|e| JmError::Unreachable {
                url: url.into(),
                message: e.to_string(),
            })?;
        let code = r.status().as_u16();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((code, v))
    }

    /// The job `id`, or `None` when the jobmanager does not know it.
    pub async fn job(&self, url: &str, id: &str) -> Result<Option<JobView>, JmError> {
        match self {
            JmClient::Fake(f) => {
                let mut f = f.lock().map_err(|_| JmError::Failed {
                    url: url.into(),
                    message: "poisoned".into(),
                })?;
                f.calls.push(format!("GET /jobs/{id}"));
                if !f.reachable {
                    return Err(JmError::Unreachable {
                        url: url.into(),
                        message: "connection refused".into(),
                    });
                }
                Ok(f.jobs.get(id).cloned())
            }
            JmClient::Http(c) => {
                let (code, v) = Self::get(c, url, &format!("/jobs/{id}")).await?;
                if code == 404 {
                    return Ok(None);
                }
                if code != 200 {
                    return Err(JmError::Failed {
                        url: url.into(),
                        message: format!("GET /jobs/{id}: {code} {v}"),
                    });
                }
                let (_, cp) = Self::get(c, url, &format!("/jobs/{id}/checkpoints")).await?;
                let latest = &cp["latest"]["completed"];
                let last_checkpoint = latest["id"].as_u64().map(|cid| CheckpointInfo {
                    id: cid,
                    path: latest["external_path"].as_str().unwrap_or_default().into(),
                    time: rfc3339(latest["latest_ack_timestamp"].as_i64().unwrap_or(0)),
                });
                Ok(Some(JobView {
                    state: v["state"].as_str().unwrap_or("UNKNOWN").to_string(),
                    last_checkpoint,
                    failure: v["failure-cause"].as_str().map(str::to_string),
                }))
            }
        }
    }

    /// Takes a savepoint (`stop`: and stops the job with it); waits for its location.
    pub async fn savepoint(&self, url: &str, id: &str, stop: bool) -> Result<String, JmError> {
        match self {
            JmClient::Fake(f) => {
                let mut f = f.lock().map_err(|_| JmError::Failed {
                    url: url.into(),
                    message: "poisoned".into(),
                })?;
                f.calls.push(format!(
                    "POST /jobs/{id}/{}",
                    if stop { "stop" } else { "savepoints" }
                ));
                if !f.reachable {
                    return Err(JmError::Unreachable {
                        url: url.into(),
                        message: "connection refused".into(),
                    });
                }
                f.savepoints += 1;
                let path = format!("s3://bucket/savepoints/savepoint-{}", f.savepoints);
                if stop && let Some(j) = f.jobs.get_mut(id) {
                    j.state = "FINISHED".into();
                }
                Ok(path)
            }
            JmClient::Http(c) => {
                let (path, body) = if stop {
                    (format!("{url}/jobs/{id}/stop"), serde_json::json!({}))
                } else {
                    (
                        format!("{url}/jobs/{id}/savepoints"),
                        serde_json::json!({ "cancel-job": false }),
                    )
                };
                let unreachable = |e: reqwest::Error| JmError::Unreachable {
                    url: url.into(),
                    message: e.to_string(),
                };
                let r = c.post(path).json(&body).send().await.map_err(unreachable)?;
                let v: Value = r.json().await.map_err(unreachable)?;
                let rid = v["request-id"].as_str().ok_or_else(|| JmError::Failed {
                    url: url.into(),
                    message: format!("savepoint not accepted: {v}"),
                })?;
                let until = Instant::now() + Duration::from_secs(300);
                loop {
                    let (_, s) = Self::get(c, url, &format!("/jobs/{id}/savepoints/{rid}")).await?;
                    if s["status"]["id"] == "COMPLETED" {
                        return match s["operation"]["location"].as_str() {
                            Some(p) => Ok(p.to_string()),
                            None => Err(JmError::Failed {
                                url: url.into(),
                                message: format!(
                                    "savepoint failed: {}",
                                    s["operation"]["failure-cause"]["stack-trace"]
                                ),
                            }),
                        };
                    }
                    if Instant::now() > until {
                        return Err(JmError::Failed {
                            url: url.into(),
                            message: "savepoint did not complete within 5 minutes".into(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_631_123_046), "2026-11-25T18:25:23Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
