//! The Prometheus endpoint of a process: `metrics.reporter.prom.port` (a port, or a range
//! `9250-9260` of which the first free one is taken, as Flink's reporter does, so that
//! several processes on one host can share a configuration) on
//! `metrics.reporter.prom.host`, answering `GET /metrics` (and `GET /`).

use std::net::{SocketAddr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::families::Families;

/// Flink's key of the reporter's port.
pub const PORT_KEY: &str = "metrics.reporter.prom.port";
/// The address the reporter binds.
pub const HOST_KEY: &str = "metrics.reporter.prom.host";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{PORT_KEY} = '{0}': expected a port (9249) or a range of ports (9250-9260)")]
    BadPort(String),
    #[error("{PORT_KEY}: no port of {first}-{last} could be bound on {host}: {source}")]
    Bind {
        host: String,
        first: u16,
        last: u16,
        source: std::io::Error,
    },
    #[error("starting the metrics reporter: {0}")]
    Start(std::io::Error),
}

/// What a scrape reports: called on every `GET /metrics`.
pub type Collect = Arc<dyn Fn() -> Families + Send + Sync>;

/// Parses `9249` or `9250-9260`.
pub fn parse_ports(spec: &str) -> Result<RangeInclusive<u16>, MetricsError> {
    let bad = || MetricsError::BadPort(spec.to_string());
    let (a, b) = match spec.trim().split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (spec.trim(), spec.trim()),
    };
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// A running endpoint; dropping it stops it.
pub struct Reporter {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts the endpoint when `get(PORT_KEY)` is set; `default_host` when `HOST_KEY` is not.
    pub fn from_settings(
        get: impl Fn(&str) -> Option<String>,
        default_host: &str,
        collect: Collect,
    ) -> Result<Option<Reporter>, MetricsError> {
        let Some(port) = get(PORT_KEY) else {
            return Ok(None);
        };
        let host = get(HOST_KEY).unwrap_or_else(|| default_host.to_string());
        Reporter::start(&port, &host, collect).map(Some)
    }

    /// Binds the first free port of `ports` on `host` and serves `collect` there.
    pub fn start(ports: &str, host: &str, collect: Collect) -> Result<Reporter, MetricsError> {
        let range = parse_ports(ports)?;
        let mut last_err = None;
        let mut bound = None;
        for p in range.clone() {
            match TcpListener::bind((host, p)) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let listener = bound.ok_or_else(|| MetricsError::Bind {
            host: host.to_string(),
            first: *range.start(),
            last: *range.end(),
            source: last_err.unwrap_or_else(|| std::io::Error::other("empty range")),
        })?;
        listener
            .set_nonblocking(true)
            .map_err(MetricsError::Start)?;
        let addr = listener.local_addr().map_err(MetricsError::Start)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MetricsError::Start)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("metrics-reporter".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "metrics reporter");
                            return;
                        }
                    };
                    let scrape = move || {
                        let collect = collect.clone();
                        async move { scrape(&collect) }
                    };
                    let app = Router::new()
                        .route("/metrics", get(scrape.clone()))
                        .route("/", get(scrape));
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = rx.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "metrics reporter");
                    }
                });
            })
            .map_err(MetricsError::Start)?;
        tracing::info!(address = %addr, "Prometheus metrics on /metrics");
        Ok(Reporter {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The line a process prints on standard error once the reporter listens; scripts
    /// and tests find the scrape address in it ([`announced_address`]).
    pub fn announcement(&self) -> String {
        format!("{ANNOUNCEMENT}{}/metrics", self.addr)
    }
}

const ANNOUNCEMENT: &str = "Prometheus metrics: http://";

/// The `host:port` of the first reporter announced in `text` (a process's log).
pub fn announced_address(text: &str) -> Option<String> {
    let rest = &text[text.find(ANNOUNCEMENT)? + ANNOUNCEMENT.len()..];
    Some(rest.split('/').next()?.trim().to_string())
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The exposition of one scrape.
pub fn scrape(collect: &Collect) -> axum::response::Response {
    match collect().encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn ports_and_ranges_parse_and_bad_ones_name_the_key() {
        assert_eq!(parse_ports("9249").expect("port"), 9249..=9249);
        assert_eq!(parse_ports("9250 - 9260").expect("range"), 9250..=9260);
        let e = parse_ports("92x").expect_err("bad").to_string();
        assert!(e.contains("metrics.reporter.prom.port = '92x'"), "{e}");
        assert!(parse_ports("10-9").is_err());
    }

    #[test]
    fn the_endpoint_serves_the_scrape_and_takes_the_next_free_port_of_a_range() {
        let collect: Collect = Arc::new(|| {
            let mut f = Families::default();
            f.gauge("flink_jobmanager_numRunningJobs", "jobs", &[], 3.0);
            f
        });
        let a = Reporter::start("0", "127.0.0.1", collect.clone()).expect("starts");
        let port = a.local_addr().port();
        let range = format!("{port}-{}", port.saturating_add(20));
        let b = Reporter::start(&range, "127.0.0.1", collect).expect("second in range");
        assert_ne!(b.local_addr().port(), port);
        let mut s = std::net::TcpStream::connect(a.local_addr()).expect("connects");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("writes");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("reads");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            body.contains("flink_jobmanager_numRunningJobs 3.0"),
            "{body}"
        );
        let log = format!("starting\n{}\nmore", b.announcement());
        assert_eq!(announced_address(&log), Some(b.local_addr().to_string()));
        assert_eq!(announced_address("nothing"), None);
        drop(a);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
