//! Received messages as `receive` and `dlq show` print them: a line each, or with `--output
//! json` an array of objects whose field names are a contract for scripts: `message_id`,
//! `topic`, `queue_id`, `offset`, `keys`, `tag`, `properties`, `delivery_attempt`, the body as
//! `body` when it is printable UTF-8 text, else as `body_base64`, and for dead letters
//! `dead_letter_topic` (the topic it came from).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use serde::Serialize;
use vela_sdk::MessageView;

#[derive(Serialize)]
struct MessageJson<'a> {
    message_id: &'a str,
    topic: &'a str,
    queue_id: i32,
    offset: i64,
    keys: &'a [String],
    tag: Option<&'a str>,
    properties: BTreeMap<&'a str, &'a str>,
    delivery_attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter_topic: Option<&'a str>,
}

/// The body as text if it is UTF-8 without control characters other than whitespace.
pub(super) fn printable(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body)
        .ok()
        .filter(|s| !s.chars().any(|c| c.is_control() && !c.is_whitespace()))
}

/// A body as JSON scripts read it: `(body, body_base64)`, the text when it is printable, else
/// base64.
pub(super) fn body_fields(body: &[u8]) -> (Option<&str>, Option<String>) {
    let text = printable(body);
    let encoded = text
        .is_none()
        .then(|| base64::engine::general_purpose::STANDARD.encode(body));
    (text, encoded)
}

/// `messages` as a pretty JSON array, ending with a newline.
pub(super) fn to_json(messages: &[MessageView]) -> anyhow::Result<String> {
    let items: Vec<MessageJson<'_>> = messages
        .iter()
        .map(|m| {
            let (body, body_base64) = body_fields(&m.body);
            MessageJson {
                message_id: &m.message_id,
                topic: &m.topic,
                queue_id: m.queue_id,
                offset: m.offset,
                keys: &m.keys,
                tag: m.tag.as_deref(),
                properties: m
                    .properties
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                delivery_attempt: m.delivery_attempt,
                body,
                body_base64,
                dead_letter_topic: m.dead_letter_topic.as_deref(),
            }
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&items)?;
    out.push('\n');
    Ok(out)
}

/// One line per message (what `receive` has always printed).
pub(super) fn to_lines(messages: &[MessageView]) -> anyhow::Result<String> {
    let mut out = String::new();
    if messages.is_empty() {
        writeln!(out, "no messages")?;
    }
    for m in messages {
        writeln!(
            out,
            "{} queue {} offset {} attempt {} tag {} body {}",
            m.message_id,
            m.queue_id,
            m.offset,
            m.delivery_attempt,
            m.tag.as_deref().unwrap_or("-"),
            String::from_utf8_lossy(&m.body)
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_text_when_printable() {
        assert_eq!(printable(b"hello\nworld"), Some("hello\nworld"));
        assert_eq!(printable(b"\x00\x01"), None);
        assert_eq!(printable(&[0xff, 0xfe]), None);
    }
}
