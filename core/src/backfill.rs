//! `backfill`'s check of one NDJSON line: a JSON object with the fields an
//! event needs, that jsonb can store. Plain serde, no Postgres: the run and
//! its statements are in the extension's `src/api/backfill.rs`.

use crate::delivery::check_event_key;
use serde::Deserialize;
use serde_json::Value;

/// The fields backfill reads. serde skips the rest of the object without
/// building it, which is most of the parsing cost saved.
#[derive(Deserialize)]
struct Fields {
    event_id: Option<Value>,
    event_type: Option<Value>,
    request_id: Option<Value>,
    schema_version: Option<Value>,
    actor: Option<Value>,
}

/// An accepted line.
#[derive(Debug)]
pub struct Event<'a> {
    pub line_no: i32,
    pub event_id: String,
    pub event_type: String,
    pub subject_id: String,
    pub payload: &'a str,
}

/// Check one line: a JSON object with the required fields, that jsonb can
/// store. Its size is checked where every event's is, by the extension's
/// insert path (`payload_refusal`): the limit applies to the payload as
/// stored and sent, not to the line as written.
pub fn parse_line(line_no: i32, line: &str) -> Result<Event<'_>, String> {
    let line = line.trim();
    // serde would also read a JSON array into the struct, field by position.
    if !line.starts_with('{') {
        return Err(match serde_json::from_str::<Value>(line) {
            Ok(_) => "not a JSON object".to_owned(),
            Err(e) => format!("not valid JSON: {e}"),
        });
    }
    let fields: Fields = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    // jsonb cannot store U+0000. Most lines have no such escape: check those that do.
    if line.contains("\\u0000") && serde_json::from_str::<Value>(line).is_ok_and(|v| has_nul(&v)) {
        return Err("contains \\u0000, which jsonb cannot store".to_owned());
    }
    let event_id = required(fields.event_id.as_ref(), "event_id", true)?;
    check_event_key("event_id", &event_id)?;
    let event_type = required(fields.event_type.as_ref(), "event_type", false)?;
    check_event_key("event_type", &event_type)?;
    required(fields.request_id.as_ref(), "request_id", true)?;
    required(fields.schema_version.as_ref(), "schema_version", true)?;
    let user_id = fields.actor.as_ref().and_then(|actor| actor.get("user_id"));
    let subject_id = required(user_id, "actor.user_id", true)?;
    check_event_key("actor.user_id", &subject_id)?;
    Ok(Event {
        line_no,
        event_id,
        event_type,
        subject_id,
        payload: line,
    })
}

/// A required field: a non-empty string, or where `numbers` allows it a
/// number, kept as its JSON text.
fn required(value: Option<&Value>, name: &str, numbers: bool) -> Result<String, String> {
    match value {
        None | Some(Value::Null) => Err(format!("missing {name}")),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) if numbers => Ok(n.to_string()),
        Some(_) if numbers => Err(format!("{name} must be a non-empty string or a number")),
        Some(_) => Err(format!("{name} must be a non-empty string")),
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, event_type: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","event_type":"{event_type}","request_id":"req-{id}","schema_version":1,"actor":{{"user_id":"u-{id}"}}}}"#
        )
    }

    #[test]
    fn parse_line_accepts_the_required_fields() {
        let l = r#" {"event_id":7,"event_type":"order.paid","request_id":"r","schema_version":"1.0","actor":{"user_id":42},"x":[1]} "#;
        let e = parse_line(3, l).unwrap();
        assert_eq!(
            (
                e.line_no,
                e.event_id.as_str(),
                e.event_type.as_str(),
                e.subject_id.as_str()
            ),
            (3, "7", "order.paid", "42")
        );
        assert_eq!(e.payload, l.trim());
    }

    #[test]
    fn parse_line_reasons() {
        let cases = [
            ("nope", "not valid JSON"),
            ("[1]", "not a JSON object"),
            (
                r#"{"event_type":"t","request_id":"r","schema_version":1,"actor":{"user_id":"u"}}"#,
                "missing event_id",
            ),
            (
                r#"{"event_id":"","event_type":"t"}"#,
                "event_id must be a non-empty string or a number",
            ),
            (
                r#"{"event_id":"e","event_type":5}"#,
                "event_type must be a non-empty string",
            ),
            (
                r#"{"event_id":"e","event_type":"t","schema_version":1}"#,
                "missing request_id",
            ),
            (
                r#"{"event_id":"e","event_type":"t","request_id":"r"}"#,
                "missing schema_version",
            ),
            (
                r#"{"event_id":"e","event_type":"t","request_id":"r","schema_version":1,"actor":{}}"#,
                "missing actor.user_id",
            ),
            (
                r#"{"event_id":"e","event_type":"t","request_id":"r","schema_version":1,"actor":"u"}"#,
                "missing actor.user_id",
            ),
            (
                r#"{"event_id":"e","event_type":"t","request_id":"r","schema_version":1,"actor":{"user_id":null}}"#,
                "missing actor.user_id",
            ),
            (r#"{"event_id":"e\u0000","event_type":"t"}"#, "\\u0000"),
        ];
        for (l, reason) in cases {
            let err = parse_line(1, l).unwrap_err();
            assert!(err.contains(reason), "{l}: {err}");
        }
        // An escaped backslash before u0000 is not a NUL.
        assert!(parse_line(1, &line(r"a\\u0000", "t")).is_ok());
    }
}
