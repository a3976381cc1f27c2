//! The audit chain's group commit keeps every answered call's row: the real binary serves
//! concurrent calls, is killed (SIGKILL) right after answers arrive, and after a restart every
//! answered call's row is in the chain, which still verifies. Runs on SQLite, or on PostgreSQL
//! with `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use std::process::Command;

use common::TestDatabase;
use futures::stream::{FuturesUnordered, StreamExt};

const BIN: &str = env!("CARGO_BIN_EXE_paywarden");
const ENTITY: &str = "8ac7a4c9000000000000000000000001";
const TOKEN: &str = "pw_demo_sandbox_token_only_valid_against_the_paywarden_emulator";

fn database_url(database: &TestDatabase, dir: &std::path::Path) -> String {
    database
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("paywarden.db").display()))
}

/// The real binary on port 0 ([`common::serve_binary`]).
async fn serve(dir: &std::path::Path, url: &str) -> (common::BinaryServer, String) {
    common::serve_binary(dir, url).await
}

/// One stateless (2026-07-28) `revenue_summary` call whose arguments name `day`; true when it
/// was answered with a result.
async fn call(client: &reqwest::Client, base: &str, day: u32) -> bool {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": day, "method": "tools/call", "params": {
    "name": "revenue_summary",
    "arguments": {"start_date": format!("2026-01-{day:02}"), "end_date": "2026-12-31"},
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "durability", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    }}});
    let Ok(response) = client
        .post(format!("{base}/mcp"))
        .header("X-Entity-Id", ENTITY)
        .header("X-Token", TOKEN)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", "revenue_summary")
        .json(&body)
        .send()
        .await
    else {
        return false;
    };
    match response.text().await {
        Ok(text) => text.contains("\"result\"") && !text.contains("\"isError\":true"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn every_answered_call_is_in_the_audit_chain_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::fresh().await;
    let url = database_url(&database, dir.path());
    let (child, base) = serve(dir.path(), &url).await;
    let client = reqwest::Client::new();
    // Warm up (authentication cache, connections), so the burst below is concurrent.
    assert!(call(&client, &base, 31).await);

    // 28 concurrent calls (days 1..=28); SIGKILL as soon as the first half is answered, while
    // the rest are in flight (some of them in a group being committed).
    let mut calls: FuturesUnordered<_> = (1..=28u32)
        .map(|day| {
            let client = client.clone();
            let base = base.clone();
            async move { (day, call(&client, &base, day).await) }
        })
        .collect();
    let mut answered = Vec::new();
    while let Some((day, ok)) = calls.next().await {
        if ok {
            answered.push(day);
        }
        if answered.len() >= 14 {
            break;
        }
    }
    drop(child); // SIGKILL
                 // Answers that were already on their way count too.
    while let Some((day, ok)) = calls.next().await {
        if ok {
            answered.push(day);
        }
    }
    assert!(answered.len() >= 14, "answered: {answered:?}");

    // Restart on the same database: the chain verifies and holds every answered call.
    let (child, _base) = serve(dir.path(), &url).await;
    let store = database.store(dir.path()).await;
    let records = store.audit_records(Some(ENTITY)).await.unwrap();
    for day in &answered {
        let start = format!("2026-01-{day:02}");
        assert!(
            records.iter().any(|r| r.entry.tool == "revenue_summary"
                && r.entry.arguments["start_date"] == start.as_str()),
            "the answered call of {start} has no audit row"
        );
    }
    assert_eq!(store.verify_audit().await.unwrap(), None);
    drop(child);
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .env("DATABASE_URL", &url)
        .env_remove("PAYWARDEN_CONFIG")
        .output()
        .expect("paywarden audit verify runs");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
