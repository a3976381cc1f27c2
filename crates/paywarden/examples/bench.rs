//! The benchmark's helpers (run by `scripts/bench.sh`, see docs/performance.md): the two
//! baseline servers the audited reads are compared with, and the small load loops for what a
//! single fixed request (wrk) cannot express.
//!
//! - `echo --listen ADDR`: a bare axum JSON-RPC echo (`POST /mcp`, answers `{"jsonrpc","id","result":{}}`).
//! - `noop --listen ADDR [--answer FILE]`: rmcp's Streamable HTTP server with one no-op tool
//!   `noop`, the same server configuration paywarden uses (stateless for 2026-07-28 requests).
//!   It answers `"ok"`, or with `--answer` a copy of the `CallToolResult` in FILE (JSON: a tool
//!   call's `result`, e.g. paywarden's `revenue_summary` answer), so the protocol's cost of an
//!   answer that size is measured without paywarden's pipeline.
//! - `refund --url URL --reference ID --currency CUR`: the confirmed refund flow, a preview
//!   (`perform_refund` of 0.01) and then its confirmation, in a closed loop per connection.
//! - `sessions --url URL`: session clients (2025-11-25): each connection initializes one
//!   session and then calls `revenue_summary` in it, in a closed loop.
//! - `open-sessions --url URL --count N`: opens N sessions, prints `opened N`, keeps them open for
//!   `--hold` seconds (the script reads the server's RSS meanwhile), then closes them.
//!
//! The loops print one line: `name req_per_s p50_ms p99_ms ok errors` (a flow counts once).
//! Speed is measured here, never asserted by a test.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use rmcp::{
    handler::server::router::tool::ToolRouter,
    model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig},
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    },
    ServerHandler,
};
use serde_json::{json, Value};

/// The same allocator as the `paywarden` binary (jemalloc), so that the baselines and the
/// audited reads are compared on equal terms.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ENTITY: &str = "8ac7a4c9000000000000000000000001";
const TOKEN: &str = "pw_demo_sandbox_token_only_valid_against_the_paywarden_emulator";
const STATELESS: &str = "2026-07-28";
const LEGACY: &str = "2025-11-25";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A bare axum JSON-RPC echo.
    Echo {
        #[arg(long)]
        listen: String,
    },
    /// rmcp's Streamable HTTP server with one no-op tool.
    Noop {
        #[arg(long)]
        listen: String,
        /// A `CallToolResult` (JSON) every call answers with a copy of, instead of `"ok"`.
        #[arg(long)]
        answer: Option<std::path::PathBuf>,
    },
    /// The confirmed refund flow (preview, then confirmation).
    Refund {
        #[command(flatten)]
        load: Load,
        /// The transaction(s) to refund, comma-separated. Connection `i` of `c` refunds the
        /// `i`-th, `(i + c)`-th, `(i + 2c)`-th, ... in turn (indices mod `n`): with `n = k·c`
        /// each connection rotates over `k` of its own; with one reference every flow serialises on it
        /// (the worst case); with one connection and `n` references the flows rotate over
        /// them, so no payment piles up refunds faster than in the `n`-connection row.
        #[arg(long, value_delimiter = ',', required = true)]
        reference: Vec<String>,
        #[arg(long)]
        currency: String,
    },
    /// Session clients calling `revenue_summary`.
    Sessions {
        #[command(flatten)]
        load: Load,
    },
    /// Opens `count` sessions and holds them.
    OpenSessions {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 10)]
        hold: u64,
    },
}

#[derive(clap::Args, Clone)]
struct Load {
    /// The MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Echo { listen } => echo(&listen).await,
        Command::Noop { listen, answer } => noop(&listen, answer.as_deref()).await,
        Command::Refund {
            load,
            reference,
            currency,
        } => {
            let references = Arc::new(reference);
            let currency = Arc::new(currency);
            let connections = load.connections;
            run_loop("refund_flow", &load, move |client, url, worker, flow| {
                let reference =
                    references[(worker + flow * connections) % references.len()].clone();
                let currency = currency.clone();
                async move { refund_flow(&client, &url, &reference, &currency).await }
            })
            .await
        }
        Command::Sessions { load } => session_clients(&load).await,
        Command::OpenSessions { url, count, hold } => open_sessions(&url, count, hold).await,
    }
}

async fn echo(listen: &str) -> anyhow::Result<()> {
    async fn handle(axum::Json(request): axum::Json<Value>) -> axum::Json<Value> {
        axum::Json(json!({"jsonrpc": "2.0", "id": request.get("id"), "result": {}}))
    }
    let app = axum::Router::new().route("/mcp", axum::routing::post(handle));
    let listener = nodelay(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[derive(Clone)]
struct NoopServer {
    tool_router: ToolRouter<Self>,
    /// The result every call answers with a copy of; `None` answers `"ok"`.
    answer: Option<Arc<CallToolResult>>,
}

#[tool_router]
impl NoopServer {
    #[tool(description = "Does nothing.")]
    fn noop(&self) -> CallToolResult {
        match &self.answer {
            Some(answer) => CallToolResult::clone(answer),
            None => CallToolResult::success(vec![ContentBlock::text("ok")]),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for NoopServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

async fn noop(listen: &str, answer: Option<&std::path::Path>) -> anyhow::Result<()> {
    let answer = match answer {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let result: CallToolResult = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a CallToolResult", path.display()))?;
            Some(Arc::new(result))
        }
        None => None,
    };
    let server = NoopServer {
        tool_router: NoopServer::tool_router(),
        answer,
    };
    // paywarden's own configuration (crate::http::router), minus its host and origin lists.
    let service: StreamableHttpService<NoopServer, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(server.clone()),
            Default::default(),
            StreamableHttpServerConfig::default(),
        );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = nodelay(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn nodelay(
    listen: &str,
) -> anyhow::Result<impl axum::serve::Listener<Addr = std::net::SocketAddr>> {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    Ok(listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    }))
}

/// A stateless (2026-07-28) `tools/call` request's body.
fn stateless_call(tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": STATELESS,
            "io.modelcontextprotocol/clientInfo": {"name": "paywarden-bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}
        }
    }})
}

/// POSTs one JSON-RPC message; returns the session header and the body (an SSE stream's
/// `data:` lines joined, or the JSON).
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    version: &str,
    session: Option<&str>,
) -> anyhow::Result<(Option<String>, String)> {
    let method = body["method"].as_str().unwrap_or_default();
    let mut request = client
        .post(url)
        .header("X-Entity-Id", ENTITY)
        .header("X-Token", TOKEN)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", version)
        .json(body);
    if version == STATELESS {
        request = request.header("Mcp-Method", method);
        if let Some(name) = body["params"]["name"].as_str() {
            request = request.header("Mcp-Name", name);
        }
    }
    if let Some(session) = session {
        request = request.header("Mcp-Session-Id", session);
    }
    let response = request.send().await?;
    let status = response.status();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await?;
    if !status.is_success() {
        bail!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        );
    }
    Ok((session, text))
}

/// Fails unless the body holds a successful tool result.
fn check_result(body: &str) -> anyhow::Result<()> {
    if body.contains("\"result\"") && !body.contains("\"isError\":true") {
        Ok(())
    } else {
        bail!(
            "not a successful result: {}",
            body.chars().take(300).collect::<String>()
        )
    }
}

async fn refund_flow(
    client: &reqwest::Client,
    url: &str,
    reference: &str,
    currency: &str,
) -> anyhow::Result<()> {
    let args = json!({"referenceId": reference, "amount": "0.01", "currency": currency});
    let (_, preview) = post(
        client,
        url,
        &stateless_call("perform_refund", args.clone()),
        STATELESS,
        None,
    )
    .await?;
    let start = preview.find("pwc_").with_context(|| {
        format!(
            "no confirmation token: {}",
            preview.chars().take(300).collect::<String>()
        )
    })?;
    let token: String = preview[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let mut confirm = args;
    confirm["confirmationToken"] = json!(token);
    let (_, done) = post(
        client,
        url,
        &stateless_call("perform_refund", confirm),
        STATELESS,
        None,
    )
    .await?;
    if !done.contains("succeeded") {
        bail!(
            "refund not confirmed: {}",
            done.chars().take(300).collect::<String>()
        );
    }
    Ok(())
}

async fn open_session(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {},
        "clientInfo": {"name": "paywarden-bench", "version": "1"}}});
    let (session, body) = post(client, url, &init, LEGACY, None).await?;
    let session = session.with_context(|| format!("no Mcp-Session-Id: {body}"))?;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(client, url, &initialized, LEGACY, Some(&session)).await?;
    Ok(session)
}

async fn session_clients(load: &Load) -> anyhow::Result<()> {
    let call = Arc::new(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "revenue_summary",
        "arguments": {"start_date": "2026-01-01", "end_date": "2026-12-31"}}}),
    );
    let sessions = Arc::new(tokio::sync::Mutex::new(Vec::<Option<String>>::new()));
    sessions.lock().await.resize(load.connections, None);
    run_loop("session_clients", load, move |client, url, worker, _| {
        let call = call.clone();
        let sessions = sessions.clone();
        async move {
            let existing = sessions.lock().await[worker].clone();
            let session = match existing {
                Some(s) => s,
                None => {
                    let s = open_session(&client, &url).await?;
                    sessions.lock().await[worker] = Some(s.clone());
                    s
                }
            };
            let (_, body) = post(&client, &url, &call, LEGACY, Some(&session)).await?;
            check_result(&body)
        }
    })
    .await
}

async fn open_sessions(url: &str, count: usize, hold: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        sessions.push(open_session(&client, url).await?);
    }
    println!("opened {}", sessions.len());
    tokio::time::sleep(Duration::from_secs(hold)).await;
    for session in sessions {
        let _ = client
            .delete(url)
            .header("X-Entity-Id", ENTITY)
            .header("X-Token", TOKEN)
            .header("MCP-Protocol-Version", LEGACY)
            .header("Mcp-Session-Id", session)
            .send()
            .await;
    }
    Ok(())
}

/// Runs `op(client, url, connection, iteration)` in a closed loop on `load.connections`
/// connections for `load.seconds` (`iteration` counts that connection's calls from 0), then
/// prints `name req_per_s p50_ms p99_ms ok errors` (and the first error, on stderr).
async fn run_loop<F, Fut>(name: &str, load: &Load, op: F) -> anyhow::Result<()>
where
    F: Fn(reqwest::Client, String, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(load.seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..load.connections {
        let op = op.clone();
        let url = load.url.clone();
        workers.push(tokio::spawn(async move {
            // One connection per worker, as wrk's.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            for iteration in 0.. {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match op(client.clone(), url.clone(), worker, iteration).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            anyhow::Ok((latencies, errors, first_error))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for worker in workers {
        let (latencies, e, first) = worker.await??;
        all.extend(latencies);
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i].as_secs_f64() * 1000.0
    };
    println!(
        "{name} {:.0} {:.2} {:.2} {} {}",
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        all.len(),
        errors
    );
    if let Some(e) = first_error {
        eprintln!("{name}: first error: {e}");
    }
    Ok(())
}
