//! What the client writes into headers, checked where it is given: event
//! ids, types and subjects, an endpoint's extra headers, and text cut to a
//! byte limit at a character boundary.

use http::header::{HeaderName, HeaderValue};

/// Cuts `text` to at most `max` bytes, at a character boundary.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Headers an endpoint's extra headers may not set: the signature headers and
/// content-type define the webhook, the others frame the HTTP message.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Longest event id, type or subject: the id is a header value and part of
/// the (endpoint_id, event_id) key, whose btree entries have a size limit.
pub const MAX_EVENT_KEY_BYTES: usize = 255;

/// Checks an event's id, type or subject where it is given (enqueue, emit,
/// backfill): 1 to 255 printable ASCII characters, which any HTTP header
/// value may carry. Caught there, never later as a dead letter or an index
/// error that aborts the caller's transaction.
pub fn check_event_key(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_EVENT_KEY_BYTES {
        return Err(format!(
            "{field} must be 1 to {MAX_EVENT_KEY_BYTES} bytes long, got {}",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "{field} contains {c:?}: only printable ASCII characters (space to ~) are allowed, as in an HTTP header"
        ));
    }
    Ok(())
}

/// Checks one of an endpoint's extra headers, for `create_endpoint`.
pub fn validate_header(name: &str, value: &str) -> Result<(), String> {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "header name \"{name}\" is not a valid HTTP header name"
        ));
    }
    if is_reserved(name) {
        return Err(format!(
            "header \"{name}\" is set by webhook_outbox and cannot be overridden"
        ));
    }
    if HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "header \"{name}\" has an invalid value: it must be printable ASCII without line breaks"
        ));
    }
    Ok(())
}

pub(super) fn is_reserved(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_are_printable_ascii_of_bounded_length() {
        assert!(check_event_key("event_id", "order-42-paid").is_ok());
        assert!(check_event_key("event_id", &"x".repeat(255)).is_ok());
        assert!(check_event_key("event_id", &"x".repeat(256))
            .unwrap_err()
            .contains("1 to 255 bytes"));
        assert!(check_event_key("event_id", "")
            .unwrap_err()
            .contains("1 to 255 bytes"));
        assert!(check_event_key("subject_id", "a\r\nx-evil: 1")
            .unwrap_err()
            .contains("'\\r'"));
        assert!(check_event_key("event_type", "caf\u{e9}")
            .unwrap_err()
            .contains("printable ASCII"));
    }

    #[test]
    fn validate_header_cases() {
        assert_eq!(validate_header("X-Api-Key", "abc 123"), Ok(()));
        assert_eq!(validate_header("authorization", "Bearer x"), Ok(()));
        assert_eq!(validate_header("user-agent", "custom/1"), Ok(()));
        let cases = [
            (
                "bad header",
                "x",
                "\"bad header\" is not a valid HTTP header name",
            ),
            ("", "x", "\"\" is not a valid HTTP header name"),
            (
                "Content-Type",
                "text/plain",
                "\"Content-Type\" is set by webhook_outbox",
            ),
            (
                "webhook-signature",
                "v1,x",
                "is set by webhook_outbox and cannot be overridden",
            ),
            ("Host", "evil.example", "\"Host\" is set by webhook_outbox"),
            ("transfer-encoding", "chunked", "is set by webhook_outbox"),
            ("x-note", "a\nb", "\"x-note\" has an invalid value"),
            ("x-note", "nul\0", "\"x-note\" has an invalid value"),
        ];
        for (name, value, want) in cases {
            let err = validate_header(name, value).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
