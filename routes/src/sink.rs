//! Where a route's copies go: a topic through a `vela-sdk` Producer, or an HTTP endpoint as
//! CloudEvents 1.0 in structured JSON (one event per request, or a batch array).

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use vela_proto::TopicName;
use vela_proto::route::{HttpTarget, RouteSpec};
use vela_sdk::{MessageView, Producer};

use crate::copy::copy_of;

/// The CloudEvents `type` of a routed message.
pub const EVENT_TYPE: &str = "dev.vela.message";
/// How long one HTTP request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error answer's body the last error quotes.
const ERROR_BODY: usize = 200;

pub(crate) enum Sink {
    Topic {
        producer: Producer,
        topic: TopicName,
    },
    Http(HttpSink),
}

pub(crate) struct HttpSink {
    client: reqwest::Client,
    target: HttpTarget,
    /// The target's headers, values marked sensitive (kept out of reqwest's debug output).
    headers: reqwest::header::HeaderMap,
}

impl Sink {
    pub(crate) fn http(target: HttpTarget) -> Result<Self, String> {
        // reqwest's rustls runs on the process's default provider: ring, as everywhere in Vela.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for h in &target.headers {
            let name = reqwest::header::HeaderName::from_bytes(h.name().as_bytes())
                .map_err(|e| format!("header {}: {e}", h.name()))?;
            let mut value = reqwest::header::HeaderValue::from_str(h.expose()).map_err(|_| {
                format!("header {}: the value is not a valid header value", h.name())
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        Ok(Sink::Http(HttpSink {
            client,
            target,
            headers,
        }))
    }

    /// How many messages one delivery carries at most.
    pub(crate) fn chunk(&self) -> usize {
        match self {
            Sink::Topic { .. } => usize::MAX,
            Sink::Http(h) => h.target.batch as usize,
        }
    }

    /// Delivers the messages of `messages` not yet `delivered`, marking each that is; an error
    /// says what failed (the caller retries what is left). To a topic, messages of one message
    /// group go one after another, in order, and stop at the first failure; different groups,
    /// and messages of none, go at the same time. To HTTP, all of them go in one request.
    pub(crate) async fn deliver(
        &self,
        spec: &RouteSpec,
        cluster: &str,
        messages: &[MessageView],
        delivered: &mut [bool],
    ) -> Result<(), String> {
        match self {
            Sink::Topic { producer, topic } => {
                let send = |m: &MessageView| {
                    let copy = copy_of(spec, topic, m, cluster);
                    async move {
                        producer
                            .send(copy.map_err(|e| e.to_string())?)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                };
                // Lanes: each message group's undelivered messages in order; a message
                // without a group is a lane of its own.
                let mut lanes: Vec<Vec<usize>> = Vec::new();
                let mut by_group: std::collections::HashMap<&str, usize> = Default::default();
                for (i, m) in messages.iter().enumerate() {
                    if delivered[i] {
                        continue;
                    }
                    match m.message_group.as_deref() {
                        Some(g) => {
                            let lane = *by_group.entry(g).or_insert_with(|| {
                                lanes.push(Vec::new());
                                lanes.len() - 1
                            });
                            lanes[lane].push(i);
                        }
                        None => lanes.push(vec![i]),
                    }
                }
                let results = futures::future::join_all(lanes.into_iter().map(|lane| async {
                    let mut done = Vec::new();
                    for i in lane {
                        match send(&messages[i]).await {
                            Ok(()) => done.push(i),
                            Err(e) => return (done, Err(e)),
                        }
                    }
                    (done, Ok(()))
                }))
                .await;
                let mut first_error = Ok(());
                for (done, result) in results {
                    for i in done {
                        delivered[i] = true;
                    }
                    if first_error.is_ok() {
                        first_error = result;
                    }
                }
                first_error
            }
            Sink::Http(h) => {
                h.post(spec, cluster, messages).await?;
                delivered.iter_mut().for_each(|d| *d = true);
                Ok(())
            }
        }
    }

    pub(crate) async fn shutdown(&self) {
        if let Sink::Topic { producer, .. } = self {
            let _ = producer.shutdown().await;
        }
    }
}

impl HttpSink {
    async fn post(
        &self,
        spec: &RouteSpec,
        cluster: &str,
        messages: &[MessageView],
    ) -> Result<(), String> {
        let events: Vec<Value> = messages
            .iter()
            .map(|m| cloud_event(spec, cluster, m))
            .collect();
        let (content_type, body) = if self.target.batch == 1 && events.len() == 1 {
            ("application/cloudevents+json; charset=utf-8", &events[0])
        } else {
            (
                "application/cloudevents-batch+json; charset=utf-8",
                &Value::Array(events.clone()),
            )
        };
        let url = &self.target.url;
        let answer = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.text().await.unwrap_or_default();
        let quoted: String = text.chars().take(ERROR_BODY).collect();
        Err(format!("POST {url}: HTTP {status}: {quoted}"))
    }
}

/// One message as a CloudEvents 1.0 event in structured JSON: the message id as `id`, the tag
/// as `subject`, the store time as `time`, the body as `data` (JSON when it parses as JSON,
/// text when it is UTF-8, else `data_base64`), and Vela's extension attributes (`velaroute`,
/// `velatopic`, `velakeys` space-separated, `velamessagegroup`, `velaproperties` as a JSON
/// object in a string, since extension values are strings).
pub fn cloud_event(spec: &RouteSpec, cluster: &str, m: &MessageView) -> Value {
    let mut event = Map::new();
    event.insert("specversion".into(), json!("1.0"));
    event.insert("id".into(), json!(m.message_id));
    event.insert(
        "source".into(),
        json!(format!("vela://{cluster}/topics/{}", m.topic)),
    );
    event.insert("type".into(), json!(EVENT_TYPE));
    if let Some(tag) = &m.tag {
        event.insert("subject".into(), json!(tag));
    }
    if let Some(at) = m.store_timestamp.or(m.born_timestamp) {
        event.insert(
            "time".into(),
            json!(humantime::format_rfc3339_millis(at).to_string()),
        );
    }
    if let Ok(value) = serde_json::from_slice::<Value>(&m.body) {
        event.insert("datacontenttype".into(), json!("application/json"));
        event.insert("data".into(), value);
    } else if let Ok(text) = std::str::from_utf8(&m.body) {
        event.insert("datacontenttype".into(), json!("text/plain; charset=utf-8"));
        event.insert("data".into(), json!(text));
    } else {
        event.insert("datacontenttype".into(), json!("application/octet-stream"));
        event.insert(
            "data_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&m.body)),
        );
    }
    event.insert("velaroute".into(), json!(spec.name.as_str()));
    event.insert("velatopic".into(), json!(m.topic));
    if !m.keys.is_empty() {
        event.insert("velakeys".into(), json!(m.keys.join(" ")));
    }
    if let Some(group) = &m.message_group {
        event.insert("velamessagegroup".into(), json!(group));
    }
    if !m.properties.is_empty() {
        let properties: std::collections::BTreeMap<&String, &String> =
            m.properties.iter().collect();
        event.insert(
            "velaproperties".into(),
            json!(serde_json::to_string(&properties).unwrap_or_default()),
        );
    }
    Value::Object(event)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::SystemTime;

    use vela_proto::route::{RouteEndpoint, RouteFilter, RouteTarget};
    use vela_proto::{GroupName, GroupStart, RouteName};

    use super::*;

    fn spec() -> RouteSpec {
        RouteSpec {
            name: RouteName::new("hook").expect("name"),
            source_topic: TopicName::new("orders").expect("topic"),
            group: GroupName::new("route-hook").expect("group"),
            source: RouteEndpoint::local(),
            target: RouteTarget::Http(HttpTarget::new("http://127.0.0.1:1/", 1).expect("url")),
            filter: RouteFilter::All,
            start: GroupStart::Auto,
            keep_message_id: false,
        }
    }

    fn view(body: &[u8]) -> MessageView {
        let mut m = MessageView::detached("orders", "01AB");
        m.body = body.to_vec().into();
        m.tag = Some("paid".into());
        m.keys = vec!["k1".into(), "k2".into()];
        m.message_group = Some("user-1".into());
        m.properties = HashMap::from([("region".to_owned(), "eu".to_owned())]);
        m.store_timestamp = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        m
    }

    #[test]
    fn a_message_is_a_structured_cloud_event() {
        let event = cloud_event(&spec(), "vela-a", &view(br#"{"amount": 5}"#));
        assert_eq!(
            event,
            json!({
                "specversion": "1.0",
                "id": "01AB",
                "source": "vela://vela-a/topics/orders",
                "type": "dev.vela.message",
                "subject": "paid",
                "time": "2023-11-14T22:13:20.123Z",
                "datacontenttype": "application/json",
                "data": {"amount": 5},
                "velaroute": "hook",
                "velatopic": "orders",
                "velakeys": "k1 k2",
                "velamessagegroup": "user-1",
                "velaproperties": r#"{"region":"eu"}"#,
            })
        );
    }

    #[test]
    fn text_and_binary_bodies() {
        let text = cloud_event(&spec(), "a", &view(b"hello"));
        assert_eq!(text["data"], "hello");
        assert_eq!(text["datacontenttype"], "text/plain; charset=utf-8");
        let binary = cloud_event(&spec(), "a", &view(&[0xff, 0x00, 0x80]));
        assert_eq!(binary["data_base64"], "/wCA");
        assert!(binary.get("data").is_none());
        // Extension names are lowercase letters and digits only (CloudEvents 1.0).
        for key in binary.as_object().expect("object").keys() {
            assert!(
                key == "data_base64"
                    || key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{key}"
            );
        }
    }
}
