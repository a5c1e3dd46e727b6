//! `docs/events.md` as a checker: every JSON line a `shieldcall` process prints in the suite is
//! held against the event tables there (names, fields, presence, types, listed values).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

const DOC: &str = include_str!("../../../../docs/events.md");

/// What a table row allows.
#[derive(Debug, Clone)]
struct Field {
    kind: String,
    nullable: bool,
    values: Option<Vec<String>>,
    always: bool,
}

type Events = HashMap<String, HashMap<String, Field>>;

fn events() -> &'static Events {
    static EVENTS: OnceLock<Events> = OnceLock::new();
    EVENTS.get_or_init(|| parse(DOC).unwrap_or_else(|e| panic!("docs/events.md: {e}")))
}

fn parse(doc: &str) -> Result<Events, String> {
    let mut out = Events::new();
    let mut current: Option<String> = None;
    for (n, line) in doc.lines().enumerate() {
        if let Some(h) = line.strip_prefix("### ") {
            let name = h.trim().trim_matches('`').to_owned();
            if out.insert(name.clone(), HashMap::new()).is_some() {
                return Err(format!("line {}: event {name} listed twice", n + 1));
            }
            current = Some(name);
            continue;
        }
        if line.starts_with("## ") {
            current = None;
            continue;
        }
        let Some(event) = &current else { continue };
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if !line.starts_with('|')
            || cells.len() < 3
            || cells[0] == "field"
            || cells[0].starts_with("---")
        {
            continue;
        }
        let name = cells[0].trim_matches('`').to_owned();
        let mut kind = cells[1].to_owned();
        let nullable = kind.ends_with(" or null");
        if nullable {
            kind = kind
                .trim_end_matches(" or null")
                .trim_end_matches(',')
                .to_owned();
        }
        let values = kind
            .strip_prefix("one of ")
            .map(|v| v.split(", ").map(str::to_owned).collect::<Vec<_>>());
        if values.is_some() {
            kind = "string".into();
        }
        if !["string", "integer", "number", "boolean", "array", "object"].contains(&kind.as_str()) {
            return Err(format!("line {}: unknown type {kind:?}", n + 1));
        }
        let always = match cells[2] {
            "always" => true,
            "optional" => false,
            other => return Err(format!("line {}: presence {other:?}", n + 1)),
        };
        let fields = out.get_mut(event).ok_or("no event")?;
        fields.insert(
            name,
            Field {
                kind,
                nullable,
                values,
                always,
            },
        );
    }
    if out.is_empty() {
        return Err("no events found".into());
    }
    Ok(out)
}

/// How many events the document lists.
pub fn count() -> usize {
    events().len()
}

/// Why `v` does not match docs/events.md, if it does not. A demo forwards its sides' events
/// with `side` added: that field is allowed on any event the demo's own tables do not list it
/// for.
pub fn mismatch(v: &Value) -> Option<String> {
    let Some(obj) = v.as_object() else {
        return Some("not an object".into());
    };
    let Some(name) = obj.get("event").and_then(Value::as_str) else {
        return Some("no \"event\" string".into());
    };
    let Some(fields) = events().get(name) else {
        return Some(format!("event {name:?} is not in docs/events.md"));
    };
    for (key, value) in obj {
        if key == "event" || (key == "side" && !fields.contains_key("side") && value.is_string()) {
            continue;
        }
        let Some(f) = fields.get(key) else {
            return Some(format!("{name}: field {key:?} is not in docs/events.md"));
        };
        let ok = match value {
            Value::Null => f.nullable,
            Value::String(s) => {
                f.kind == "string" && f.values.as_ref().is_none_or(|vs| vs.contains(s))
            }
            Value::Number(n) => {
                f.kind == "number" || (f.kind == "integer" && (n.is_u64() || n.is_i64()))
            }
            Value::Bool(_) => f.kind == "boolean",
            Value::Array(_) => f.kind == "array",
            Value::Object(_) => f.kind == "object",
        };
        if !ok {
            return Some(format!(
                "{name}: {key} = {value} does not match its row in docs/events.md ({f:?})"
            ));
        }
    }
    for (key, f) in fields {
        if f.always && !obj.contains_key(key) {
            return Some(format!(
                "{name}: field {key:?} is missing (docs/events.md: always)"
            ));
        }
    }
    None
}

/// Parses one line `shieldcall --json` printed and checks it against docs/events.md.
pub fn parse_line(line: &str) -> Value {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("non-JSON line {line:?}: {e}"));
    if let Some(why) = mismatch(&v) {
        panic!("{why}\n  line: {line}");
    }
    v
}
