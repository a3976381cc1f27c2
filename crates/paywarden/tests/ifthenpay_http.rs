//! `/mcp/payments/` at the HTTP level, as a browser page of the ifthenpay seed meets it: the
//! seed's CORS headers on every answer (a refused Host or Origin, a body that is too large, a
//! method other than POST, a notification, a parse error), and a body that is too large is
//! the endpoint's JSON-RPC -32600 error with HTTP 413. And a replayed creation says
//! `idempotentReplay` alike in `content[0].text` and `structuredContent`.

mod common;

use common::{spawn_app_with, TestApp};
use paywarden_emulator::IFTHENPAY_MB_KEY;
use serde_json::{json, Value};

const ENDPOINT: &str = "/mcp/payments/";
/// The body limit of these tests' server.
const MAX_BODY: usize = 4096;

async fn spawn() -> TestApp {
    spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.http.max_body_bytes = MAX_BODY;
    })
    .await
}

/// The seed's CORS headers, checked on one answer.
fn assert_cors(response: &reqwest::Response, what: &str) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        (
            header("access-control-allow-origin").as_str(),
            header("access-control-allow-headers").as_str(),
            header("access-control-allow-methods").as_str(),
        ),
        ("*", "Content-Type, Authorization", "POST, OPTIONS"),
        "{what}: HTTP {} without the seed's CORS headers",
        response.status()
    );
}

fn post(app: &TestApp) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}{ENDPOINT}", app.base_url))
        .header("content-type", "application/json")
}

#[tokio::test]
async fn every_answer_carries_the_seeds_cors_headers() {
    let app = spawn().await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();

    // A Host name that is not allowed (DNS rebinding): 403, still with CORS.
    let response = post(&app)
        .header("host", "evil.example")
        .body(ping.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    assert_cors(&response, "Host refused");

    // A later MCP revision from a page of a foreign Origin (rmcp refuses it): 403 with CORS.
    let response = post(&app)
        .header("origin", "https://evil.example")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "page", "version": "1"}}})
            .to_string(),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    assert_cors(&response, "Origin refused");

    // Too large, announced by Content-Length and streamed without one: HTTP 413 with the
    // endpoint's JSON-RPC error body.
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(MAX_BODY)}})
        .to_string();
    let response = post(&app).body(big.clone()).send().await.expect("sent");
    assert_eq!(response.status(), 413, "with Content-Length");
    assert_cors(&response, "413 with Content-Length");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert_too_large(&body, "with Content-Length");
    let (status, headers, body) = chunked_post(&app, &big).await;
    assert_eq!(status, 413, "chunked: {headers}\n{body}");
    for needed in [
        "access-control-allow-origin: *",
        "access-control-allow-headers: Content-Type, Authorization",
        "access-control-allow-methods: POST, OPTIONS",
        "content-type: application/json",
    ] {
        assert!(
            headers
                .to_ascii_lowercase()
                .contains(&needed.to_ascii_lowercase()),
            "chunked 413 lacks {needed:?}: {headers}"
        );
    }
    assert_too_large(
        &serde_json::from_str(&body).expect("a JSON body"),
        "chunked",
    );

    // Methods other than POST: 405 with CORS and Allow.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = reqwest::Client::new()
            .request(method.clone(), format!("{}{ENDPOINT}", app.base_url))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 405, "{method}");
        assert_cors(&response, &format!("405 {method}"));
    }

    // A notification (202, no body), a parse error (400), a success (200).
    let response = post(&app)
        .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    assert_cors(&response, "202");
    let response = post(&app).body("{not json").send().await.expect("sent");
    assert_eq!(response.status(), 400);
    assert_cors(&response, "400");
    let response = post(&app).body(ping).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    assert_cors(&response, "200");
}

fn assert_too_large(body: &Value, how: &str) {
    assert_eq!(body["jsonrpc"], "2.0", "{how}: {body}");
    assert_eq!(body["id"], Value::Null, "{how}: {body}");
    assert_eq!(body["error"]["code"], -32600, "{how}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&MAX_BODY.to_string()), "{how}: {body}");
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no Content-Length) over a raw connection;
/// returns the status, the header block and the (de-chunked) body.
async fn chunked_post(app: &TestApp, body: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = app.base_url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect");
    let mut request = format!(
        "POST {ENDPOINT} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(1024) {
        request.push_str(&format!("{:x}\r\n", chunk.len()));
        request.push_str(&String::from_utf8_lossy(chunk));
        request.push_str("\r\n");
    }
    request.push_str("0\r\n\r\n");
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, rest) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.push_str(&tail[..size]);
            rest = tail[size..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

#[tokio::test]
async fn a_replayed_creation_says_so_in_the_text_and_in_structured_content() {
    let app = spawn().await;
    let arguments = json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "REPLAY-1", "amount": 12.5});
    let call = || async {
        let answer: Value = post(&app)
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "multibanco_create_reference", "arguments": arguments}})
                .to_string(),
            )
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let result = answer["result"].clone();
        assert_eq!(result["isError"], false, "{answer}");
        let text: Value =
            serde_json::from_str(result["content"][0]["text"].as_str().expect("text"))
                .expect("content[0].text is JSON");
        (text, result["structuredContent"].clone())
    };
    let (first_text, first_structured) = call().await;
    assert_eq!(first_text, first_structured);
    assert!(first_text.get("idempotentReplay").is_none(), "{first_text}");

    let (text, structured) = call().await;
    assert_eq!(
        text, structured,
        "content[0].text and structuredContent of a replay"
    );
    assert_eq!(text["idempotentReplay"], true, "{text}");
    assert_eq!(text["reference"], first_text["reference"], "{text}");
    assert_eq!(text["request_id"], first_text["request_id"], "{text}");
}
