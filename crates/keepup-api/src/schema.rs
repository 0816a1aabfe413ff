//! Checks a JSON document against a schema of `openapi.json` (the subset
//! it uses: type, required, properties, items, nullable, enum, $ref), so
//! tests hold the server and its published description to each other.

use serde_json::Value;

/// Returns every mismatch between `doc` and `components.schemas.<name>`.
pub fn check(doc: &Value, name: &str) -> Vec<String> {
    let spec: Value = match serde_json::from_str(crate::OPENAPI) {
        Ok(v) => v,
        Err(e) => return vec![format!("openapi.json does not parse: {e}")],
    };
    let mut errors = Vec::new();
    let schema = serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
    walk(&spec, &schema, doc, name, &mut errors);
    errors
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut v = spec;
            for part in r.trim_start_matches("#/").split('/') {
                v = &v[part];
            }
            v
        }
        None => schema,
    }
}

fn walk(spec: &Value, schema: &Value, doc: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if doc.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{path}: null but not nullable"));
        }
        return;
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => doc.is_object(),
            "array" => doc.is_array(),
            "string" => doc.is_string(),
            "integer" => doc.is_u64() || doc.is_i64(),
            "number" => doc.is_number(),
            "boolean" => doc.is_boolean(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: expected {t}, got {doc}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(doc) {
            errors.push(format!("{path}: {doc} not in {allowed:?}"));
        }
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if doc.get(r).is_none() {
                errors.push(format!("{path}: missing required field {r:?}"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        doc.as_object(),
    ) {
        for (k, sub) in props {
            if let Some(v) = obj.get(k) {
                walk(spec, sub, v, &format!("{path}.{k}"), errors);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), doc.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            walk(spec, items, v, &format!("{path}[{i}]"), errors);
        }
    }
}
