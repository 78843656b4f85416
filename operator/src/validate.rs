//! Reconcile-time validation: what the CRD's OpenAPI schema cannot say. Errors name the
//! field path (`spec.job.parallelism`), land in the Degraded condition and an Event, and
//! nothing is created for an invalid spec.

use crate::crd::FlinkJobSpec;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        path: path.into(),
        message: message.into(),
    }
}

/// Keys the operator sets itself; setting them in `flinkConfiguration` would break the
/// deployment it makes.
const RESERVED: &[&str] = &[
    "jobmanager.rpc.address",
    "jobmanager.rpc.port",
    "rest.port",
    "taskmanager.data.port",
    "taskmanager.numberOfTaskSlots",
    "execution.savepoint.path",
    "pipeline.job-id",
    "$internal.pipeline.job-id",
    // The operator's per-job token (Secret `{name}-rest-token`), which it must know to
    // reach the jobmanager.
    "rest.authentication.token-file",
];

fn is_duration(v: &str) -> bool {
    let v = v.trim();
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return false;
    }
    let unit = v[digits.len()..].trim();
    matches!(
        unit,
        "" | "ms"
            | "s"
            | "sec"
            | "second"
            | "seconds"
            | "min"
            | "m"
            | "minute"
            | "minutes"
            | "h"
            | "hour"
            | "hours"
    )
}

pub fn validate(spec: &FlinkJobSpec) -> Result<(), SpecError> {
    if spec.image.trim().is_empty() {
        return Err(err("spec.image", "must name the flink-rs image"));
    }
    if spec.job.sql.trim().is_empty() {
        return Err(err("spec.job.sql", "must hold the job's SQL script"));
    }
    if !spec.job.sql.to_ascii_uppercase().contains("INSERT") {
        return Err(err(
            "spec.job.sql",
            "has no INSERT INTO statement, so there is no job to run",
        ));
    }
    if !(1..=1024).contains(&spec.job.parallelism) {
        return Err(err("spec.job.parallelism", "must be between 1 and 1024"));
    }
    let tm = &spec.task_manager;
    if tm.replicas < 1 {
        return Err(err("spec.taskManager.replicas", "must be at least 1"));
    }
    if tm.slots < 1 {
        return Err(err("spec.taskManager.slots", "must be at least 1"));
    }
    let slots = i64::from(tm.replicas) * i64::from(tm.slots);
    if slots < i64::from(spec.job.parallelism) {
        return Err(err(
            "spec.taskManager.replicas",
            format!(
                "{} taskmanagers x {} slots = {slots} slots, fewer than spec.job.parallelism {}",
                tm.replicas, tm.slots, spec.job.parallelism
            ),
        ));
    }
    for k in spec.flink_configuration.keys() {
        if RESERVED.contains(&k.as_str()) {
            let why = if k == crate::resources::REST_TOKEN_FILE_KEY {
                "is set by the operator: every job's REST API requires a token of its own, in \
                 the Secret `<name>-rest-token` (key `token`)"
            } else {
                "is set by the operator (use spec.job.initialSavepointPath, spec.taskManager.slots, …)"
            };
            return Err(err(&format!("spec.flinkConfiguration[{k}]"), why));
        }
    }
    if spec
        .flink_configuration
        .get("security.ssl.rest.enabled")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err(err(
            "spec.flinkConfiguration[security.ssl.rest.enabled]",
            "REST TLS is not supported with the operator yet: it reaches the jobmanager over \
             plain HTTP (with the job's REST token, inside the job's NetworkPolicy)",
        ));
    }
    if let Some(cp) = &spec.checkpointing {
        let s = cp.storage.trim();
        if !(s.starts_with("s3://")
            || s.starts_with("gs://")
            || s.starts_with("az://")
            || s.starts_with("file://")
            || s.starts_with('/'))
        {
            return Err(err(
                "spec.checkpointing.storage",
                format!("`{s}` is not s3://, gs://, az://, file:// or an absolute path"),
            ));
        }
        if let Some(i) = &cp.interval
            && !is_duration(i)
        {
            return Err(err(
                "spec.checkpointing.interval",
                format!("`{i}` is not a duration such as `10 s`"),
            ));
        }
    } else if spec.job.upgrade_mode != crate::crd::UpgradeMode::Stateless {
        return Err(err(
            "spec.checkpointing",
            "is required with upgradeMode savepoint or last-state (they need checkpoint storage)",
        ));
    }
    for (path, r) in [
        (
            "spec.jobManager.resources",
            spec.job_manager.resources.as_ref(),
        ),
        ("spec.taskManager.resources", tm.resources.as_ref()),
    ] {
        if let Some(r) = r {
            if let Some(m) = &r.memory
                && !m.trim().chars().next().is_some_and(|c| c.is_ascii_digit())
            {
                return Err(err(
                    &format!("{path}.memory"),
                    format!("`{m}` is not a quantity such as `1Gi`"),
                ));
            }
            if let Some(c) = &r.cpu
                && !c.trim().chars().next().is_some_and(|c| c.is_ascii_digit())
            {
                return Err(err(
                    &format!("{path}.cpu"),
                    format!("`{c}` is not a quantity such as `500m` or `2`"),
                ));
            }
        }
    }
    for (path, t) in [
        (
            "spec.jobManager.podTemplate",
            spec.job_manager.pod_template.as_ref(),
        ),
        ("spec.taskManager.podTemplate", tm.pod_template.as_ref()),
    ] {
        if let Some(t) = t {
            pod_template(path, t)?;
        }
    }
    Ok(())
}

/// What the spec may set given how the operator runs: with `restricted_paths` (the
/// operator's `--allowed-paths`), where jobs read and write files is the operator's to say.
pub fn validate_settings(spec: &FlinkJobSpec, restricted_paths: bool) -> Result<(), SpecError> {
    let key = crate::resources::ALLOWED_PATHS_KEY;
    if restricted_paths && spec.flink_configuration.contains_key(key) {
        return Err(err(
            &format!("spec.flinkConfiguration[{key}]"),
            "is set by the operator, which restricts where jobs read and write files (its \
             --allowed-paths, chart value filesystem.allowedPaths, and the job's checkpoint storage)",
        ));
    }
    Ok(())
}

/// A pod template must be a Kubernetes PodTemplateSpec (containers may be partial: they
/// merge into flink-rs's own); a mistyped field is an error naming its path, never a field
/// silently dropped.
fn pod_template(path: &str, t: &serde_json::Value) -> Result<(), SpecError> {
    let mut t = t.clone();
    // Partial containers are allowed: give each the fields a Container requires.
    if let Some(spec) = t.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.entry("containers")
            .or_insert_with(|| serde_json::json!([]));
        for list in ["containers", "initContainers"] {
            for c in spec
                .get_mut(list)
                .and_then(|c| c.as_array_mut())
                .into_iter()
                .flatten()
            {
                if let Some(c) = c.as_object_mut() {
                    c.entry("name")
                        .or_insert_with(|| "flink-main-container".into());
                }
            }
        }
    }
    serde_path_to_error::deserialize::<_, k8s_openapi::api::core::v1::PodTemplateSpec>(t)
        .map(|_| ())
        .map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner().to_string();
            let at = if at == "." {
                String::new()
            } else {
                format!(".{at}")
            };
            err(&format!("{path}{at}"), inner)
        })
}

#[cfg(test)]
mod tests {
    use super::{pod_template, validate, validate_settings};
    use serde_json::json;

    fn spec_with(key: &str, value: &str) -> crate::crd::FlinkJobSpec {
        serde_json::from_value(json!({
            "image": "img",
            "job": { "sql": "INSERT INTO b SELECT 1", "parallelism": 1 },
            "taskManager": { "replicas": 1 },
            "flinkConfiguration": { key: value },
        }))
        .expect("spec")
    }

    #[test]
    fn the_rest_token_and_rest_tls_are_the_operator_s() {
        let e =
            validate(&spec_with("rest.authentication.token-file", "/mine")).expect_err("reserved");
        assert_eq!(
            e.path,
            "spec.flinkConfiguration[rest.authentication.token-file]"
        );
        assert!(e.message.contains("-rest-token"), "{e}");
        let e = validate(&spec_with("security.ssl.rest.enabled", "true")).expect_err("REST TLS");
        assert_eq!(e.path, "spec.flinkConfiguration[security.ssl.rest.enabled]");
        validate(&spec_with("security.ssl.rest.enabled", "false")).expect("off is fine");
    }

    #[test]
    fn allowed_paths_are_the_operator_s_when_it_restricts_them() {
        let spec = spec_with("flink-rs.filesystem.allowed-paths", "/data");
        validate(&spec).expect("valid");
        validate_settings(&spec, false).expect("a job may restrict itself");
        let e = validate_settings(&spec, true).expect_err("the operator's");
        assert_eq!(
            e.path,
            "spec.flinkConfiguration[flink-rs.filesystem.allowed-paths]"
        );
    }

    #[test]
    fn a_mistyped_pod_template_names_the_field() {
        let e = pod_template(
            "spec.taskManager.podTemplate",
            &json!({ "spec": { "nodeSelector": "pool=stream" } }),
        )
        .expect_err("a string is no map");
        assert_eq!(e.path, "spec.taskManager.podTemplate.spec.nodeSelector");
        let e = pod_template(
            "spec.jobManager.podTemplate",
            &json!({ "spec": { "containers": [{ "name": "x", "env": [{ "name": 1 }] }] } }),
        )
        .expect_err("a number is no name");
        assert!(
            e.path
                .starts_with("spec.jobManager.podTemplate.spec.containers[0].env[0]"),
            "{e}"
        );
        pod_template(
            "spec.taskManager.podTemplate",
            &json!({
                "metadata": { "labels": { "team": "data" } },
                "spec": {
                    "nodeSelector": { "pool": "stream" },
                    "containers": [{ "name": "flink-main-container", "env": [{ "name": "A", "value": "1" }] }],
                },
            }),
        )
        .expect("a partial container is allowed");
    }
}
