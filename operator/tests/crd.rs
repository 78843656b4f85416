//! The generated CRD is in sync with the Rust types (`crds/` and the chart's copy), and every
//! example manifest validates against the CRD's OpenAPI schema and the reconcile-time
//! validation.

use std::path::{Path, PathBuf};

use serde_json::Value;

use flink_rs_operator::crd::{FlinkJob, crd_yaml};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn crds_directory_matches_the_rust_types() {
    let generated = crd_yaml().expect("crd yaml");
    for file in [
        "crds/flinkjob.yaml",
        "charts/flink-rs-operator/crds/flinkjob.yaml",
    ] {
        let on_disk = std::fs::read_to_string(root().join(file)).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{file} differs from the FlinkJob types; regenerate it with\n  cargo run -p flink-rs-operator -- crdgen > {file}"
        );
    }
}

/// A structural check of `value` against an OpenAPI v3 schema as the API server applies it:
/// types, required fields, unknown fields, enums, ranges, lengths. Errors carry the path.
fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != true {
            errors.push(format!("{path}: must not be null"));
        }
        return;
    }
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema.get("properties").is_none()
    {
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(obj) = value.as_object() else {
                errors.push(format!("{path}: must be an object"));
                return;
            };
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or_default();
                if !obj.contains_key(r) {
                    errors.push(format!("{path}.{r}: required"));
                }
            }
            for (k, v) in obj {
                if let Some(p) = schema["properties"].get(k) {
                    check(p, v, &format!("{path}.{k}"), errors);
                } else if let Some(ap) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    check(ap, v, &format!("{path}[{k}]"), errors);
                } else if schema["x-kubernetes-preserve-unknown-fields"] != true {
                    errors.push(format!("{path}.{k}: unknown field"));
                }
            }
        }
        Some("string") => {
            let Some(s) = value.as_str() else {
                errors.push(format!("{path}: must be a string"));
                return;
            };
            if let Some(min) = schema["minLength"].as_u64()
                && (s.chars().count() as u64) < min
            {
                errors.push(format!("{path}: shorter than {min}"));
            }
            if let Some(e) = schema["enum"].as_array()
                && !e.iter().any(|x| x == value)
            {
                errors.push(format!("{path}: `{s}` is not one of {e:?}"));
            }
        }
        Some("integer") => {
            let Some(n) = value.as_i64() else {
                errors.push(format!("{path}: must be an integer"));
                return;
            };
            if schema["minimum"].as_f64().is_some_and(|m| (n as f64) < m) {
                errors.push(format!("{path}: below {}", schema["minimum"]));
            }
            if schema["maximum"].as_f64().is_some_and(|m| (n as f64) > m) {
                errors.push(format!("{path}: above {}", schema["maximum"]));
            }
        }
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{path}: must be a boolean"));
        }
        Some("array") => match value.as_array() {
            Some(a) => {
                for (i, v) in a.iter().enumerate() {
                    check(&schema["items"], v, &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{path}: must be an array")),
        },
        _ => {}
    }
}

fn schema() -> Value {
    let crd: Value = serde_yaml::from_str(&crd_yaml().expect("crd")).expect("crd yaml");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn validate_manifest(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let s = schema();
    // The API server checks spec against the schema (metadata is its own).
    check(&s["properties"]["spec"], &doc["spec"], "spec", &mut errors);
    if errors.is_empty() {
        match serde_json::from_value::<FlinkJob>(doc.clone()) {
            Ok(fj) => {
                if let Err(e) = flink_rs_operator::validate::validate(&fj.spec) {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(format!("does not deserialize: {e}")),
        }
    }
    errors
}

#[test]
fn example_manifests_validate_against_the_crd_schema() {
    let dir = root().join("examples/k8s");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("examples/k8s").flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("read");
        let doc: Value = serde_yaml::from_str(&text).expect("yaml");
        assert_eq!(doc["apiVersion"], "flinkrs.io/v1alpha1", "{}", p.display());
        assert_eq!(doc["kind"], "FlinkJob", "{}", p.display());
        let errors = validate_manifest(&doc);
        assert!(errors.is_empty(), "{}: {errors:?}", p.display());
        n += 1;
    }
    assert!(n >= 2, "examples found: {n}");
}

#[test]
fn schema_rejects_bad_manifests_with_the_field_path() {
    let base: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("examples/k8s/bids-per-window.yaml")).expect("read"),
    )
    .expect("yaml");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/spec/job/parallelism",
            Value::from(0),
            "spec.job.parallelism: below",
        ),
        (
            "/spec/job/upgradeMode",
            Value::from("blue-green"),
            "spec.job.upgradeMode: `blue-green` is not one of",
        ),
        ("/spec/job/state", Value::from("paused"), "spec.job.state"),
        (
            "/spec/taskManager/replicas",
            Value::from("two"),
            "spec.taskManager.replicas: must be an integer",
        ),
        ("/spec/image", Value::from(""), "spec.image: shorter than 1"),
        ("/spec/jobb", Value::from(1), "spec.jobb: unknown field"),
        (
            "/spec/job/parallelism",
            Value::from(4),
            "spec.taskManager.replicas: 2 taskmanagers x 1 slots",
        ),
        (
            "/spec/checkpointing/storage",
            Value::from("hdfs://x"),
            "spec.checkpointing.storage: `hdfs://x`",
        ),
        (
            "/spec/flinkConfiguration/execution.savepoint.path",
            Value::from("/x"),
            "spec.flinkConfiguration[execution.savepoint.path]",
        ),
    ];
    for (pointer, v, expect) in cases {
        let mut doc = base.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        doc.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("parent")
            .insert(key.to_string(), v);
        let errors = validate_manifest(&doc);
        assert!(
            errors.iter().any(|e| e.contains(expect)),
            "{pointer}: expected `{expect}` in {errors:?}"
        );
    }
    let mut doc = base.clone();
    doc["spec"]["job"]
        .as_object_mut()
        .expect("job")
        .remove("sql");
    assert!(
        validate_manifest(&doc)
            .iter()
            .any(|e| e == "spec.job.sql: required")
    );
}
