//! Checks JSON answers against `docs/rest-api.yaml` (OpenAPI 3): the document is the
//! contract tests' input, so a field renamed, added or dropped on either side fails them.
//!
//! What is checked: `type` (object, array, string, integer, number, boolean), `enum`,
//! `required`, `properties` (an object may have no property the schema does not declare,
//! unless it allows `additionalProperties`), `items`, `$ref` and `allOf`.

use serde_json::Value;

/// The API document.
pub struct Spec {
    doc: Value,
}

impl Spec {
    /// Reads `docs/rest-api.yaml` of the repository.
    pub fn load() -> Spec {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rest-api.yaml");
        let text = std::fs::read_to_string(path).expect("docs/rest-api.yaml");
        let doc: Value = serde_yaml::from_str(&text).expect("docs/rest-api.yaml is YAML");
        Spec { doc }
    }

    /// Every path with a GET operation, as written (`/jobs/{jobid}`).
    pub fn get_paths(&self) -> Vec<String> {
        self.doc["paths"]
            .as_object()
            .map(|p| {
                p.iter()
                    .filter(|(_, op)| op.get("get").is_some())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The schema of the JSON answer of `GET path` with `status`, if documented.
    pub fn response_schema(&self, path: &str, status: u16) -> Option<Value> {
        let mut r = self.doc["paths"][path]["get"]["responses"][status.to_string()].clone();
        if let Some(reference) = r.get("$ref").and_then(Value::as_str) {
            r = self.resolve(reference);
        }
        r.pointer("/content/application~1json/schema").cloned()
    }

    fn resolve(&self, reference: &str) -> Value {
        let pointer = reference.strip_prefix('#').expect("local $ref");
        self.doc
            .pointer(pointer)
            .cloned()
            .unwrap_or_else(|| panic!("docs/rest-api.yaml has no {reference}"))
    }

    /// The differences between `value` and `schema`, each with its JSON path; empty when
    /// the value conforms.
    pub fn check(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check_at("$", schema, value, &mut errors);
        errors
    }

    fn check_at(&self, at: &str, schema: &Value, value: &Value, errors: &mut Vec<String>) {
        if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let s = self.resolve(r);
            return self.check_at(at, &s, value, errors);
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            // The parts together declare the object's properties.
            let mut merged = serde_json::Map::new();
            let mut required = Vec::new();
            for part in all {
                let part = match part.get("$ref").and_then(Value::as_str) {
                    Some(r) => self.resolve(r),
                    None => part.clone(),
                };
                if let Some(p) = part.get("properties").and_then(Value::as_object) {
                    merged.extend(p.clone());
                }
                if let Some(r) = part.get("required").and_then(Value::as_array) {
                    required.extend(r.clone());
                }
            }
            let s =
                serde_json::json!({"type": "object", "properties": merged, "required": required});
            return self.check_at(at, &s, value, errors);
        }
        let ty = schema.get("type").and_then(Value::as_str);
        let ok = match ty {
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: expected {}, got {value}", ty.unwrap_or("?")));
            return;
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
        if let Some(items) = schema.get("items")
            && let Some(a) = value.as_array()
        {
            for (i, v) in a.iter().enumerate() {
                self.check_at(&format!("{at}[{i}]"), items, v, errors);
            }
        }
        let Some(obj) = value.as_object() else {
            return;
        };
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(r) {
                errors.push(format!("{at}: missing required `{r}`"));
            }
        }
        let additional = schema.get("additionalProperties");
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => self.check_at(&format!("{at}.{k}"), s, v, errors),
                None => match additional {
                    Some(Value::Bool(true)) => {}
                    Some(s @ Value::Object(_)) => self.check_at(&format!("{at}.{k}"), s, v, errors),
                    _ if props.is_none() => {}
                    _ => errors.push(format!("{at}: `{k}` is not in the documented schema")),
                },
            }
        }
    }
}
