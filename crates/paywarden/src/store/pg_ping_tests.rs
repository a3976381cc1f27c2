//! The store's PostgreSQL pool with the workspace's patched driver (vendor/sqlx-postgres.patch):
//! a connection in steady use is not pinged, one idle for longer than a second is, and one
//! whose server ended is never handed out twice. They run in scripts/test.sh's PostgreSQL pass
//! (`PAYWARDEN_TEST_DATABASE=postgres`, the server at `PAYWARDEN_TEST_PG_URL`).

use super::*;
use sqlx::Connection;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The tests' PostgreSQL server URL, or `None` (the test is skipped) outside the PostgreSQL
/// pass.
pub(super) fn pg_server() -> Option<url::Url> {
    if !matches!(
        std::env::var("PAYWARDEN_TEST_DATABASE").as_deref(),
        Ok("postgres") | Ok("postgresql")
    ) {
        eprintln!("skipped: runs with PAYWARDEN_TEST_DATABASE=postgres (scripts/test.sh)");
        return None;
    }
    let url = std::env::var("PAYWARDEN_TEST_PG_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_string());
    Some(url::Url::parse(url.trim_end_matches('/')).unwrap())
}

/// A fresh database on `server` (named as scripts/test.sh's clean-up expects); its URL.
pub(super) async fn fresh_database(server: &url::Url) -> (url::Url, String) {
    let run = std::env::var("PAYWARDEN_TEST_RUN_ID")
        .ok()
        .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|r| format!("{}_", r.to_ascii_lowercase()))
        .unwrap_or_default();
    let name = format!("pw_test_{run}{}", hex::encode(rand::random::<[u8; 8]>()));
    let mut admin = admin(server).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = server.clone();
    url.set_path(&name);
    (url, name)
}

async fn admin(server: &url::Url) -> sqlx::PgConnection {
    let mut url = server.clone();
    url.set_path("postgres");
    sqlx::PgConnection::connect(url.as_str()).await.unwrap()
}

pub(super) async fn drop_database(server: &url::Url, name: &str) {
    let mut admin = admin(server).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// What a [`counting_proxy`] counted of the frontend's messages: each ends in a round trip
/// (the server answers it with ReadyForQuery).
#[derive(Clone, Default)]
struct Counted {
    /// Sync (`S`): the end of an extended-protocol statement, or a ping.
    syncs: Arc<AtomicUsize>,
    /// Query (`Q`): a simple query (`BEGIN`, `COMMIT`, a custom `BEGIN ...`).
    queries: Arc<AtomicUsize>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Connections accepted before this count die silently: the next time their client sends
    /// something, the proxy closes both sides instead of passing it on (a server or network
    /// that fails without a word, found out by the statement in flight).
    severed_below: Arc<AtomicUsize>,
}

impl Counted {
    fn round_trips(&self) -> usize {
        self.syncs.load(Ordering::SeqCst) + self.queries.load(Ordering::SeqCst)
    }
}

/// A store on a fresh database of `server`, connected through [`counting_proxy`]; the
/// database's name, for [`drop_database`].
async fn store_through_proxy(server: &url::Url) -> (Store, Counted, String) {
    let (url, name) = fresh_database(server).await;
    let (through_proxy, counted) = counting_proxy(&url).await;
    let store = Store::connect(through_proxy.as_str()).await.unwrap();
    (store, counted, name)
}

/// A TCP proxy to `upstream` that counts the Sync and Query messages the clients send
/// (PostgreSQL protocol 3: after the untyped SSLRequest/GSSENCRequest and StartupMessage, every
/// frontend message is a type byte and a big-endian length that counts itself). The URL to
/// connect through it (TLS off, so that the messages can be read) and the counts.
async fn counting_proxy(upstream: &url::Url) -> (url::Url, Counted) {
    let target = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(5432)
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut url = upstream.clone();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(listener.local_addr().unwrap().port()))
        .unwrap();
    url.set_query(Some("sslmode=disable"));
    let counts = Counted::default();
    let counted = counts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else {
                continue;
            };
            let counted = counted.clone();
            let number = counted.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let answers = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut pending = Vec::new();
                let mut typed = false;
                let mut chunk = [0u8; 16384];
                loop {
                    let n = match client_read.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if number < counted.severed_below.load(Ordering::SeqCst) {
                        // Both sides close: the server's half and the client's.
                        answers.abort();
                        break;
                    }
                    if server_write.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    loop {
                        let word = |at: usize| {
                            u32::from_be_bytes([
                                pending[at],
                                pending[at + 1],
                                pending[at + 2],
                                pending[at + 3],
                            ]) as usize
                        };
                        if !typed {
                            if pending.len() < 8 || pending.len() < word(0) {
                                break;
                            }
                            let (len, code) = (word(0), word(4));
                            pending.drain(..len);
                            // SSLRequest and GSSENCRequest come before the StartupMessage.
                            typed = code != 80_877_103 && code != 80_877_104;
                        } else {
                            if pending.len() < 5 || pending.len() < 1 + word(1) {
                                break;
                            }
                            match pending[0] {
                                b'S' => counted.syncs.fetch_add(1, Ordering::SeqCst),
                                b'Q' => counted.queries.fetch_add(1, Ordering::SeqCst),
                                _ => 0,
                            };
                            let len = 1 + word(1);
                            pending.drain(..len);
                        }
                    }
                }
            });
        }
    });
    (url, counts)
}

/// Runs one statement through the store's pool, then lets the pool take the connection back
/// (sqlx returns it from a task of its own) before the next.
async fn one_statement(store: &Store, n: usize) -> Result<(), sqlx::Error> {
    match n % 3 {
        0 => sqlx::query("SELECT 1 AS one")
            .fetch_all(store.pool())
            .await
            .map(drop),
        // The `Any` driver's fetch_optional leaves the statement's end unread: the release
        // finishes it.
        1 => sqlx::query("SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(store.pool())
            .await
            .map(drop),
        _ => sqlx::query("UPDATE meta SET value = value WHERE key = 'no such key'")
            .execute(store.pool())
            .await
            .map(drop),
    }?;
    tokio::time::sleep(Duration::from_millis(3)).await;
    Ok(())
}

/// The store's connections to database `name`, as the server lists them.
async fn backends(server: &url::Url, name: &str) -> Vec<i32> {
    let mut admin = admin(server).await;
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .fetch_all(&mut admin)
        .await
        .unwrap()
}

/// Ends every connection to database `name` (as a server restart or an administrator would)
/// and waits until the server no longer lists them; how many there were.
async fn end_backends(server: &url::Url, name: &str) -> usize {
    let pids = backends(server, name).await;
    let mut admin = admin(server).await;
    for pid in &pids {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut admin)
            .await
            .unwrap();
    }
    for _ in 0..100 {
        if backends(server, name).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pids.len()
}

#[tokio::test]
async fn pg_a_connection_in_steady_use_makes_one_round_trip_per_statement() {
    let Some(server) = pg_server() else { return };
    let (store, counted, name) = store_through_proxy(&server).await;
    let syncs = counted.syncs;
    // Every statement prepared on the connections the pool has now.
    for n in 0..30 {
        one_statement(&store, n).await.unwrap();
    }
    let before = syncs.load(Ordering::SeqCst);
    let statements = 60;
    for n in 0..statements {
        one_statement(&store, n).await.unwrap();
    }
    let sent = syncs.load(Ordering::SeqCst) - before;
    // One Sync per statement. Unpatched, sqlx pings each connection it hands out
    // (`test_before_acquire`) and each it takes back, with a Sync round trip each: 3 per
    // statement.
    assert!(
        (statements..=statements + 5).contains(&sent),
        "{sent} Sync messages for {statements} statements"
    );
    drop(store);
    drop_database(&server, &name).await;
}

/// A store on a fresh database whose pool has served a few statements; the server then ends
/// every connection to it and, after `pause`, `statements` more must all succeed.
async fn every_statement_succeeds_after_the_server_ends_the_pool(
    pause: Duration,
    statements: usize,
) {
    let Some(server) = pg_server() else { return };
    let (url, name) = fresh_database(&server).await;
    let store = Store::connect(url.as_str()).await.unwrap();
    for n in 0..6 {
        one_statement(&store, n).await.unwrap();
    }
    let ended = end_backends(&server, &name).await;
    assert!(ended >= 1, "the pool kept a connection");
    tokio::time::sleep(pause).await;
    for n in 0..statements {
        one_statement(&store, n)
            .await
            .unwrap_or_else(|e| panic!("statement {n} after the server ended {ended}: {e}"));
    }
    drop(store);
    drop_database(&server, &name).await;
}

#[tokio::test]
async fn pg_a_connection_idle_for_over_a_second_is_pinged_and_replaced_when_its_server_ended() {
    // Past the window in which the server's last answer stands for a ping.
    every_statement_succeeds_after_the_server_ends_the_pool(Duration::from_millis(1_200), 10).await;
}

#[tokio::test]
async fn pg_a_connection_whose_server_ended_it_within_the_second_is_replaced_before_use() {
    // Within the second: an ended backend sent its FATAL ErrorResponse and closed the socket,
    // which the ping sees without waiting (the runtime has seen it: this test's thread sleeps
    // between statements); it makes the round trip, fails, and the pool replaces the
    // connection before handing it out.
    every_statement_succeeds_after_the_server_ends_the_pool(Duration::ZERO, 20).await;
}

#[tokio::test]
async fn pg_a_connection_that_died_silently_fails_one_statement_and_is_closed() {
    let Some(server) = pg_server() else { return };
    let (store, counted, name) = store_through_proxy(&server).await;
    for n in 0..6 {
        one_statement(&store, n).await.unwrap();
    }
    // Every connection made so far dies without a word: nothing to read until a statement is
    // sent, which then meets a closed socket.
    let severed = counted.accepted.load(Ordering::SeqCst);
    counted.severed_below.store(severed, Ordering::SeqCst);
    // Each such connection fails the statement it is given; the ping when the pool takes it
    // back waits for that statement's end, fails, and closes it: it is never handed out again.
    let mut failed = 0;
    for n in 0..30 {
        if one_statement(&store, n).await.is_err() {
            failed += 1;
        }
    }
    assert!(
        (1..=severed).contains(&failed),
        "{failed} of 30 statements failed with {severed} connections severed: a dead \
         connection was handed out again"
    );
    for n in 0..10 {
        one_statement(&store, n).await.unwrap();
    }
    drop(store);
    drop_database(&server, &name).await;
}

#[tokio::test]
async fn pg_an_audit_append_makes_four_round_trips_and_the_chain_verifies() {
    let Some(server) = pg_server() else { return };
    let (store, counted, name) = store_through_proxy(&server).await;
    for _ in 0..5 {
        store
            .append_audit(&super::tests::audit_entry("revenue_summary"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let before = counted.round_trips();
    let appends = 20;
    for n in 0..appends {
        let seq = store
            .append_audit(&super::tests::audit_entry("revenue_summary"))
            .await
            .unwrap();
        assert_eq!(seq, 6 + n as i64);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let made = counted.round_trips() - before;
    // Each append alone in its group: `BEGIN` with the chain's lock, the head, the `INSERT`,
    // `COMMIT`. With `BEGIN` and the lock sent apart: 5.
    assert!(
        (4 * appends..=4 * appends + 3).contains(&made),
        "{made} round trips for {appends} audit appends"
    );
    assert!(store.verify_audit().await.unwrap().is_none());
    drop(store);
    drop_database(&server, &name).await;
}

/// docs/deploy.md's `DATABASE_URL` for a database on the same host: the server's Unix socket
/// directory as `host`. The store connects, migrates, appends and verifies through it, and the
/// connection is the socket's (PostgreSQL reports no client address for one). The socket's
/// directory is `PAYWARDEN_TEST_PG_SOCKET_DIR` (default Debian's `/var/run/postgresql`); the
/// test says it is skipped when the server has no socket there.
#[tokio::test]
async fn pg_a_database_on_the_same_host_is_reached_through_its_unix_socket() {
    let Some(server) = pg_server() else { return };
    let dir = std::env::var("PAYWARDEN_TEST_PG_SOCKET_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/var/run/postgresql".to_string());
    let port = server.port().unwrap_or(5432);
    if !std::path::Path::new(&format!("{dir}/.s.PGSQL.{port}")).exists() {
        eprintln!(
            "skipped: no PostgreSQL socket {dir}/.s.PGSQL.{port} (PAYWARDEN_TEST_PG_SOCKET_DIR)"
        );
        return;
    }
    let (_, name) = fresh_database(&server).await;
    let url = format!(
        "postgres://{}@localhost/{name}?host={dir}&port={port}",
        server.username()
    );
    let store = Store::connect(&url).await.unwrap();
    let seq = store
        .append_audit(&super::tests::audit_entry("revenue_summary"))
        .await
        .unwrap();
    assert_eq!(seq, 1);
    assert!(store.verify_audit().await.unwrap().is_none());
    let client: Option<String> = sqlx::query_scalar("SELECT inet_client_addr()::text")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(client, None, "connected over TCP, not through {dir}");
    drop(store);
    drop_database(&server, &name).await;
}
