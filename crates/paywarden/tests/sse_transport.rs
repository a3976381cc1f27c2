//! The 2024-11-05 HTTP+SSE transport (`GET /sse` + `POST /messages?sessionId=…`, and the OPP
//! family's `GET /agentic/v1/sse` + `POST /agentic/v1/messages?sessionId=…`) over raw HTTP: the
//! `endpoint` event, 202 for every accepted message and the answers on the stream, 404 for an
//! unknown or ended session, the stream's credentials bound to its session, Host/Origin checks,
//! the body limit, and the session's end when the stream drops or stays idle.

mod common;

use std::time::Duration;

use common::*;
use paywarden_emulator::{DEMO_ENTITY_ID, DEMO_TOKEN, SECOND_ENTITY_ID, SECOND_TOKEN};
use serde_json::{json, Value};

/// (SSE stream path, message path, tools served there).
const FAMILIES: [(&str, &str); 2] = [
    ("/sse", "/messages"),
    ("/agentic/v1/sse", "/agentic/v1/messages"),
];

const WAIT: Duration = Duration::from_secs(20);

/// One server-sent event.
#[derive(Debug)]
struct Event {
    event: String,
    data: String,
}

/// An open event stream read with reqwest, event by event.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
    /// Comment lines (`: …`, keep-alives) seen so far.
    comments: usize,
}

impl EventStream {
    /// The next event (comments skipped); `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    event: "message".into(),
                    data: String::new(),
                };
                let mut has_field = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => {
                            event.event = value.to_string();
                            has_field = true;
                        }
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                            has_field = true;
                        }
                        _ => {}
                    }
                }
                if has_field {
                    return Some(event);
                }
                continue;
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self
                    .buffer
                    .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n")),
                _ => return None,
            }
        }
    }

    /// The next event, failing the test after [`WAIT`].
    async fn expect_event(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.next())
            .await
            .expect("an event within the wait")
            .expect("the stream is still open")
    }

    /// The next JSON-RPC message on the stream.
    async fn expect_message(&mut self) -> Value {
        let event = self.expect_event().await;
        assert_eq!(event.event, "message", "{event:?}");
        serde_json::from_str(&event.data).expect("a JSON-RPC message")
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// `GET` the SSE endpoint as `(entity, token)`; returns the raw response.
async fn get_stream(base: &str, path: &str, entity: &str, token: &str) -> reqwest::Response {
    http()
        .get(format!("{base}{path}"))
        .header("accept", "text/event-stream")
        .header("x-entity-id", entity)
        .header("x-token", token)
        .send()
        .await
        .expect("GET the SSE endpoint")
}

/// Opens a stream as the demo entity and reads its `endpoint` event: (stream, message URL).
async fn open(base: &str, path: &str) -> (EventStream, String) {
    let response = get_stream(base, path, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    assert_eq!(response.status(), 200, "GET {path}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("content type")
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut stream = EventStream {
        response,
        buffer: String::new(),
        comments: 0,
    };
    let endpoint = stream.expect_event().await;
    assert_eq!(endpoint.event, "endpoint", "the first event: {endpoint:?}");
    (stream, format!("{base}{}", endpoint.data))
}

/// `POST` one message to the session's URL as `(entity, token)`.
async fn post_as(url: &str, body: &Value, entity: &str, token: &str) -> reqwest::Response {
    http()
        .post(url)
        .header("x-entity-id", entity)
        .header("x-token", token)
        .json(body)
        .send()
        .await
        .expect("POST a message")
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    post_as(url, body, DEMO_ENTITY_ID, DEMO_TOKEN).await
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "sse-transport-test", "version": "1"}}})
}

/// initialize + notifications/initialized on an open session.
async fn handshake(stream: &mut EventStream, url: &str) -> Value {
    assert_eq!(post(url, &initialize(1)).await.status(), 202);
    let answer = stream.expect_message().await;
    assert_eq!(answer["id"], 1, "{answer}");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post(url, &initialized).await.status(), 202);
    answer
}

#[tokio::test]
async fn the_stream_announces_its_endpoint_and_carries_every_answer() {
    let app = spawn_app().await;
    for (sse, messages) in FAMILIES {
        let (mut stream, url) = open(&app.base_url, sse).await;
        let (path, query) = url
            .strip_prefix(&app.base_url)
            .and_then(|u| u.split_once('?'))
            .expect("endpoint is path?query");
        assert_eq!(path, messages, "{url}");
        let session = query.strip_prefix("sessionId=").expect("sessionId=…");
        assert!(
            session.len() >= 32 && session.chars().all(|c| c.is_ascii_hexdigit()),
            "an unguessable session id: {session}"
        );

        let answer = handshake(&mut stream, &url).await;
        assert_eq!(
            answer["result"]["serverInfo"]["name"], "paywarden",
            "{answer}"
        );
        assert_eq!(
            answer["result"]["protocolVersion"], "2024-11-05",
            "{answer}"
        );

        assert_eq!(
            post(
                &url,
                &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
            )
            .await
            .status(),
            202
        );
        let tools = stream.expect_message().await;
        assert_eq!(tools["id"], 2, "{tools}");
        let names: Vec<&str> = tools["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(names.contains(&"get_transactions"), "{names:?}");
        if sse == "/agentic/v1/sse" {
            assert_eq!(names.len(), 8, "the OPP seed's eight tools: {names:?}");
        } else {
            assert!(names.contains(&"lookup_customer"), "{names:?}");
        }

        // A tool call goes through the pipeline with the stream's credentials.
        let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "search_transactions", "arguments": {}}});
        assert_eq!(post(&url, &call).await.status(), 202);
        let result = stream.expect_message().await;
        assert_eq!(result["id"], 3, "{result}");
        assert_eq!(result["result"]["isError"], false, "{result}");

        // A second stream is a second session.
        let (_other, other_url) = open(&app.base_url, sse).await;
        assert_ne!(other_url, url);
    }
}

#[tokio::test]
async fn unknown_sessions_are_404_and_a_missing_id_is_400() {
    let app = spawn_app().await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    for (_, messages) in FAMILIES {
        let url = format!(
            "{}{messages}?sessionId=00000000000000000000000000000000",
            app.base_url
        );
        let response = post(&url, &ping).await;
        assert_eq!(response.status(), 404, "{messages}");
        let missing = post(&format!("{}{messages}", app.base_url), &ping).await;
        assert_eq!(missing.status(), 400, "{messages}");
        let text = missing.text().await.expect("body");
        assert!(text.contains("sessionId"), "says what is missing: {text}");
    }
    // A session belongs to the family it was opened on.
    let (_stream, url) = open(&app.base_url, "/sse").await;
    let elsewhere = url.replace("/messages?", "/agentic/v1/messages?");
    assert_eq!(post(&elsewhere, &ping).await.status(), 404);
}

#[tokio::test]
async fn messages_with_other_credentials_than_the_streams_are_refused() {
    let app = spawn_app().await;
    for (sse, _) in FAMILIES {
        let (mut stream, url) = open(&app.base_url, sse).await;
        handshake(&mut stream, &url).await;
        let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "search_transactions", "arguments": {}}});
        // Another entity's valid credentials: 403 from the session; credentials that are not
        // a valid pair at all: 401 from authentication, before any transport sees them.
        for (entity, token, status) in [
            (SECOND_ENTITY_ID, SECOND_TOKEN, 403),
            (DEMO_ENTITY_ID, SECOND_TOKEN, 401),
            (SECOND_ENTITY_ID, DEMO_TOKEN, 401),
        ] {
            let response = post_as(&url, &call, entity, token).await;
            assert_eq!(response.status(), status, "{sse} as {entity}");
            let text = response.text().await.expect("body");
            assert!(
                !text.contains(DEMO_TOKEN) && !text.contains(SECOND_TOKEN),
                "{text}"
            );
        }
        // Without credentials: 401, as on the Streamable HTTP endpoints.
        let bare = http().post(&url).json(&call).send().await.expect("POST");
        assert_eq!(bare.status(), 401, "{sse}");
        // Nothing reached the session: the next answer on the stream is the next good call's.
        assert_eq!(
            post(&url, &json!({"jsonrpc": "2.0", "id": 8, "method": "ping"}))
                .await
                .status(),
            202
        );
        assert_eq!(stream.expect_message().await["id"], 8);
    }
    for (sse, _) in FAMILIES {
        let response = http()
            .get(format!("{}{sse}", app.base_url))
            .header("x-entity-id", DEMO_ENTITY_ID)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 401, "{sse} without X-Token");
    }
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_403() {
    let app = spawn_app().await;
    for (sse, messages) in FAMILIES {
        for (header, value) in [("host", "evil.example"), ("origin", "https://evil.example")] {
            let get = http()
                .get(format!("{}{sse}", app.base_url))
                .header("x-entity-id", DEMO_ENTITY_ID)
                .header("x-token", DEMO_TOKEN)
                .header(header, value)
                .send()
                .await
                .expect("GET");
            assert_eq!(get.status(), 403, "GET {sse} with {header}: {value}");
        }
        let (_stream, url) = open(&app.base_url, sse).await;
        for (header, value) in [("host", "evil.example"), ("origin", "https://evil.example")] {
            let response = http()
                .post(&url)
                .header("x-entity-id", DEMO_ENTITY_ID)
                .header("x-token", DEMO_TOKEN)
                .header(header, value)
                .json(&initialize(1))
                .send()
                .await
                .expect("POST");
            assert_eq!(
                response.status(),
                403,
                "POST {messages} with {header}: {value}"
            );
        }
        // An allowed page is served.
        let allowed = http()
            .get(format!("{}{sse}", app.base_url))
            .header("x-entity-id", DEMO_ENTITY_ID)
            .header("x-token", DEMO_TOKEN)
            .header("origin", "http://localhost:5173")
            .send()
            .await
            .expect("GET");
        assert_eq!(allowed.status(), 200, "{sse}");
    }
}

#[tokio::test]
async fn bodies_are_bounded_and_must_be_json_rpc() {
    let app = spawn_app_with(|c| c.http.max_body_bytes = 4096).await;
    for (sse, _) in FAMILIES {
        let (_stream, url) = open(&app.base_url, sse).await;
        let big = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(8192)}});
        assert_eq!(post(&url, &big).await.status(), 413, "{sse}");
        let not_json = http()
            .post(&url)
            .header("x-entity-id", DEMO_ENTITY_ID)
            .header("x-token", DEMO_TOKEN)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("POST");
        assert_eq!(not_json.status(), 400, "{sse}");
        let not_rpc = post(&url, &json!({"hello": "world"})).await;
        assert_eq!(not_rpc.status(), 400, "{sse}");
        let body: Value = not_rpc.json().await.expect("a JSON-RPC error body");
        assert_eq!(body["error"]["code"], -32600, "{body}");
    }
}

/// Posts pings until the session is gone (404) or `within` has passed; whether it went.
async fn gone_within(url: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let status = post(
            url,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await
        .status();
        if status == 404 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_session_ends_when_its_stream_drops() {
    let app = spawn_app().await;
    for (sse, _) in FAMILIES {
        let (mut stream, url) = open(&app.base_url, sse).await;
        handshake(&mut stream, &url).await;
        drop(stream);
        assert!(
            gone_within(&url, Duration::from_secs(10)).await,
            "{sse}: the session outlived its stream"
        );
    }
}

#[tokio::test]
async fn idle_sessions_end_after_the_configured_timeout() {
    let app = spawn_app_with(|c| c.http.session_idle_timeout_secs = 2).await;
    let (mut stream, url) = open(&app.base_url, "/agentic/v1/sse").await;
    handshake(&mut stream, &url).await;
    for id in 10..16 {
        // Traffic keeps it alive past the timeout.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ping = json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
        assert_eq!(post(&url, &ping).await.status(), 202);
        assert_eq!(stream.expect_message().await["id"], id);
    }
    // Then silence: the server ends the stream and forgets the session.
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends within the wait");
    assert!(ended.is_none(), "no event but the end: {ended:?}");
    assert_eq!(
        post(&url, &json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}))
            .await
            .status(),
        404
    );
}
