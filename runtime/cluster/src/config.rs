//! Cluster configuration with Flink's keys: a file of `key: value` lines (Flink's flat
//! `config.yaml` / `flink-conf.yaml`), then the `FLINK_PROPERTIES` environment variable (same
//! lines, as in Flink's docker images), then `JOB_MANAGER_RPC_ADDRESS`, then `--set key=value`;
//! later sources win.

use std::collections::BTreeMap;
use std::time::Duration;

use flink_rs_core::error::{Error, Result};
use flink_rs_core::graph::ExecutionConfig;

/// The keys and values a jobmanager or taskmanager runs with.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    values: BTreeMap<String, String>,
}

/// Parses `key: value` lines; `#` starts a comment; blank lines are skipped.
pub fn parse_lines(text: &str, origin: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| Error::Config {
            key: format!("{origin}:{}", n + 1),
            message: format!("expected `key: value`, got `{line}`"),
        })?;
        let v = v.trim().trim_matches('"').trim_matches('\'');
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

/// The configuration file of `$FLINK_CONF_DIR`, as Flink reads it when no file is named:
/// `config.yaml`, else `flink-conf.yaml`. A directory with neither is an error, not an
/// empty configuration.
pub fn conf_dir_file(dir: Option<&str>) -> Result<Option<String>> {
    let Some(dir) = dir.filter(|d| !d.trim().is_empty()) else {
        return Ok(None);
    };
    for name in ["config.yaml", "flink-conf.yaml"] {
        let p = std::path::Path::new(dir).join(name);
        if p.is_file() {
            return Ok(Some(p.display().to_string()));
        }
    }
    Err(Error::Config {
        key: "FLINK_CONF_DIR".into(),
        message: format!("{dir} holds neither config.yaml nor flink-conf.yaml"),
    })
}

/// Where a process binds when its configuration does not say (`jobmanager.bind-host`,
/// `rest.bind-address`, `taskmanager.bind-host`): loopback, as Flink's default configuration
/// has it, so a process started by hand is not reachable from the network. The container
/// image and the operator's pods set `0.0.0.0`.
pub const DEFAULT_BIND_HOST: &str = "127.0.0.1";

/// Whether `host` is an unspecified address (`0.0.0.0`, `::`): all interfaces.
pub fn binds_all_interfaces(host: &str) -> bool {
    host.trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

impl ClusterConfig {
    /// The jobmanager's RPC and REST listen addresses.
    pub fn jobmanager_binds(&self) -> Result<(String, String)> {
        Ok((
            format!(
                "{}:{}",
                self.get_or("jobmanager.bind-host", DEFAULT_BIND_HOST),
                self.number("jobmanager.rpc.port", 6123)?
            ),
            format!(
                "{}:{}",
                self.get_or("rest.bind-address", DEFAULT_BIND_HOST),
                self.number("rest.port", 8081)?
            ),
        ))
    }

    /// Loads the configuration: `file` (when given), the environment, then `sets`.
    pub fn load(file: Option<&str>, sets: &[(String, String)]) -> Result<Self> {
        let mut cfg = ClusterConfig::default();
        let from_dir = match file {
            Some(_) => None,
            None => conf_dir_file(std::env::var("FLINK_CONF_DIR").ok().as_deref())?,
        };
        if let Some(f) = file.or(from_dir.as_deref()) {
            let text = std::fs::read_to_string(f).map_err(|e| Error::io("read", f, e))?;
            cfg.extend(parse_lines(&text, f)?);
        }
        if let Ok(props) = std::env::var("FLINK_PROPERTIES") {
            cfg.extend(parse_lines(&props, "FLINK_PROPERTIES")?);
        }
        if let Ok(addr) = std::env::var("JOB_MANAGER_RPC_ADDRESS") {
            if !addr.trim().is_empty() {
                cfg.set("jobmanager.rpc.address", addr.trim());
            }
        }
        cfg.extend(sets.iter().cloned());
        Ok(cfg)
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.values.insert(key.to_string(), value.to_string());
    }

    fn extend(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        self.values.extend(pairs);
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// A number, or an error naming the key.
    pub fn number(&self, key: &str, default: u64) -> Result<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| Error::Config {
                key: key.into(),
                message: format!("expected a number, got `{v}`"),
            }),
        }
    }

    /// A duration such as `10 s` or `500ms` (a bare number is milliseconds, as in Flink's
    /// heartbeat keys).
    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                if let Ok(ms) = v.trim().parse::<u64>() {
                    return Ok(Duration::from_millis(ms));
                }
                flink_rs_sql::parse_duration(v).ok_or_else(|| Error::Config {
                    key: key.into(),
                    message: format!("expected a duration such as `10 s`, got `{v}`"),
                })
            }
        }
    }

    /// Every pair, in key order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The job defaults this configuration gives (checkpointing, parallelism, restarts, …).
    pub fn execution_config(&self) -> Result<ExecutionConfig> {
        execution_config(&self.pairs())
    }
}

/// Applies Flink job keys to the default execution configuration; keys that are not job
/// settings (ports, addresses) are skipped.
pub fn execution_config(pairs: &[(String, String)]) -> Result<ExecutionConfig> {
    let mut cfg = ExecutionConfig::default();
    for (k, v) in pairs {
        if k == flink_rs_core::paths::KEY {
            cfg.allowed_paths = Some(allowed_paths(v)?);
            continue;
        }
        if is_process_key(k) {
            continue;
        }
        flink_rs_sql::apply_setting(&mut cfg, k, v).map_err(|m| Error::Config {
            key: k.clone(),
            message: m,
        })?;
    }
    Ok(cfg)
}

/// `flink-rs.filesystem.allowed-paths`, or an error naming the key.
pub fn allowed_paths(value: &str) -> Result<flink_rs_core::paths::AllowedPaths> {
    flink_rs_core::paths::AllowedPaths::parse(value).map_err(|message| Error::Config {
        key: flink_rs_core::paths::KEY.into(),
        message,
    })
}

/// Keys that configure the processes, not the jobs.
fn is_process_key(k: &str) -> bool {
    [
        "jobmanager.",
        "taskmanager.",
        "rest.",
        "heartbeat.",
        "blob.",
        "slot.",
        "security.",
    ]
    .iter()
    .any(|p| k.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobmanager_binds_loopback_unless_told_otherwise() -> Result<()> {
        let mut cfg = ClusterConfig::default();
        assert_eq!(
            cfg.jobmanager_binds()?,
            ("127.0.0.1:6123".to_string(), "127.0.0.1:8081".to_string())
        );
        cfg.set("jobmanager.bind-host", "0.0.0.0");
        cfg.set("rest.bind-address", "::");
        cfg.set("rest.port", "9000");
        assert_eq!(
            cfg.jobmanager_binds()?,
            ("0.0.0.0:6123".to_string(), ":::9000".to_string())
        );
        assert!(binds_all_interfaces("0.0.0.0") && binds_all_interfaces("[::]"));
        assert!(!binds_all_interfaces("127.0.0.1") && !binds_all_interfaces("tm-0"));
        Ok(())
    }

    #[test]
    fn flink_conf_dir_names_its_config_file_or_is_an_error() {
        assert_eq!(conf_dir_file(None).expect("unset"), None);
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().display().to_string();
        let e = conf_dir_file(Some(&d)).expect_err("empty dir").to_string();
        assert!(
            e.contains("FLINK_CONF_DIR") && e.contains("config.yaml"),
            "{e}"
        );
        std::fs::write(dir.path().join("flink-conf.yaml"), "a: 1").expect("write");
        assert!(
            conf_dir_file(Some(&d))
                .expect("old name")
                .is_some_and(|f| f.ends_with("flink-conf.yaml"))
        );
        std::fs::write(dir.path().join("config.yaml"), "a: 2").expect("write");
        assert!(
            conf_dir_file(Some(&d))
                .expect("new name")
                .is_some_and(|f| f.ends_with("/config.yaml"))
        );
    }

    #[test]
    fn lines_and_precedence() {
        let pairs = parse_lines(
            "# cluster\njobmanager.rpc.address: jm\n\ntaskmanager.numberOfTaskSlots: 2\nstate.checkpoints.dir: 's3://b/c'\n",
            "f",
        )
        .expect("parse");
        assert_eq!(
            pairs,
            vec![
                ("jobmanager.rpc.address".into(), "jm".into()),
                ("taskmanager.numberOfTaskSlots".into(), "2".into()),
                ("state.checkpoints.dir".into(), "s3://b/c".into()),
            ]
        );
        let e = parse_lines("a: 1\nnonsense\n", "conf.yaml").expect_err("bad line");
        assert!(e.to_string().contains("conf.yaml:2"), "{e}");
        let mut c = ClusterConfig::default();
        c.extend(pairs);
        c.extend([("taskmanager.numberOfTaskSlots".to_string(), "4".to_string())]);
        assert_eq!(c.number("taskmanager.numberOfTaskSlots", 1).expect("n"), 4);
        assert_eq!(
            c.duration("heartbeat.timeout", Duration::from_secs(50))
                .expect("d"),
            Duration::from_secs(50)
        );
        c.set("heartbeat.timeout", "1500");
        assert_eq!(
            c.duration("heartbeat.timeout", Duration::ZERO).expect("d"),
            Duration::from_millis(1500)
        );
        let ec = c.execution_config().expect("job config");
        assert_eq!(ec.checkpoint.dir.as_deref(), Some("s3://b/c"));
        c.set("parallelism.default", "x");
        assert!(c.execution_config().is_err());
    }
}
