//! The audit chain anchored by signed checkpoints, attacked as an intruder with write access to
//! the database would: the real `paywarden` binary makes audited calls and stops gracefully,
//! then the database is tampered with directly (newest rows deleted, every row deleted, a row
//! edited and every hash after it recomputed) and `paywarden audit verify` must name each cut
//! and exit non-zero; forged checkpoints are rejected; ifthenpay keys cannot be recovered from
//! the audit export. Runs on SQLite, or on PostgreSQL with `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::TestDatabase;
use paywarden::store::{AuditRecord, Store};
use paywarden_emulator::IFTHENPAY_MB_KEY;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_paywarden");

/// The checkpoint file and signing key file paywarden uses by default, in its data directory.
const CHECKPOINTS: &str = "audit-checkpoints.jsonl";
const KEY_FILE: &str = "audit-signing.key";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One paywarden deployment: a data directory and a database (SQLite in the data directory,
/// or a fresh PostgreSQL database).
struct Deployment {
    dir: tempfile::TempDir,
    database: TestDatabase,
    /// Extra environment of every command.
    env: Vec<(String, String)>,
}

impl Deployment {
    async fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            database: TestDatabase::fresh().await,
            env: Vec::new(),
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir().join("paywarden.db").display()
            )
        })
    }

    /// `paywarden <args> --data-dir DIR` with this deployment's database.
    fn command(&self, args: &[&str]) -> Command {
        self.command_in(self.data_dir(), args)
    }

    /// `paywarden <args> --data-dir data_dir` with this deployment's database.
    fn command_in(&self, data_dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("PAYWARDEN_CONFIG")
            .env_remove("DATABASE_URL")
            .env_remove("PAYWARDEN_AUDIT__SIGNING_KEY")
            .env("PAYWARDEN_LOG", "warn")
            .env("PAYWARDEN_DEMO__SEED", "false");
        if let Some(url) = &self.database.url {
            command.env("PAYWARDEN_DATABASE_URL", url);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("paywarden runs")
    }

    /// Starts `paywarden serve` on port 0; returns it and its base URL.
    fn serve(&self) -> (Proc, String) {
        let mut command = self.command(&["serve", "--listen", "127.0.0.1:0", "--no-seed"]);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("paywarden serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let proc = Proc(child);
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.split("listening on ").nth(1) {
                url = Some(rest.trim().to_string());
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        (proc, url.expect("the banner names the URL"))
    }

    fn checkpoints(&self) -> Vec<Value> {
        std::fs::read_to_string(self.data_dir().join(CHECKPOINTS))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a checkpoint line is JSON"))
            .collect()
    }

    async fn store(&self) -> Store {
        Store::connect(&self.database_url()).await.expect("store")
    }

    async fn sql(&self, statement: &str) {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.database_url())
            .await
            .expect("database");
        sqlx::query(statement)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        pool.close().await;
    }

    async fn backup(&self) {
        self.sql("CREATE TABLE audit_backup AS SELECT * FROM audit_log")
            .await;
    }

    async fn restore(&self) {
        self.sql("DELETE FROM audit_log").await;
        self.sql("INSERT INTO audit_log SELECT * FROM audit_backup")
            .await;
    }

    /// `paywarden audit verify` with `extra` arguments: (exit code, stdout + stderr).
    fn verify(&self, extra: &[&str]) -> (Option<i32>, String) {
        let mut args = vec!["audit", "verify"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The public key `paywarden audit public-key` prints.
    fn public_key(&self) -> String {
        let out = self.run(&["audit", "public-key"]);
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("public key: "))
            .unwrap_or_else(|| panic!("no public key in {stdout}"))
            .trim()
            .to_string()
    }
}

/// Stops a server as an operator or a supervisor does (SIGINT, then SIGTERM for the second
/// server), and waits for it to exit cleanly.
fn stop(mut proc: Proc, signal: &str) {
    let pid = proc.0.id().to_string();
    let status = Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proc.0.try_wait().expect("wait") {
            assert!(status.success(), "paywarden exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "paywarden did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` audited ifthenpay calls at the seed's endpoint (keys as arguments, no headers).
async fn audited_calls(url: &str, prefix: &str, n: usize) {
    let http = reqwest::Client::new();
    for i in 0..n {
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
            "name": "multibanco_create_reference",
            "arguments": {"mb_key": IFTHENPAY_MB_KEY, "order_id": format!("{prefix}-{i}"), "amount": 10}
        }});
        let answer: Value = http
            .post(format!("{url}/mcp/payments/"))
            .json(&body)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON-RPC answer");
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
}

/// The chain hash, as paywarden computes it (and as an attacker who read the source would):
/// `hex(SHA-256(prev_hash || "\n" || canonical_json(entry + at)))`.
fn chain_hash(prev_hash: &str, record: &AuditRecord) -> String {
    let mut value = serde_json::to_value(&record.entry).expect("entry");
    value["at"] = Value::String(record.at.clone());
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(paywarden::canonical::canonical_json(&value).as_bytes());
    hex::encode(hasher.finalize())
}

/// Edits entry `seq` and recomputes the hash of it and of every entry after it, so that the
/// chain on its own verifies again.
async fn rewrite_and_rehash(deployment: &Deployment, seq: i64) {
    let store = deployment.store().await;
    let mut records = store.audit_records(None).await.expect("records");
    let mut prev = records
        .iter()
        .find(|r| r.seq == seq - 1)
        .map(|r| r.hash.clone())
        .unwrap_or_else(|| "0".repeat(64));
    for record in records.iter_mut().filter(|r| r.seq >= seq) {
        if record.seq == seq {
            record.entry.arguments = json!({"amount": "999999.00", "order_id": "EDITED"});
            record.entry.outcome = "rejected".into();
        }
        record.prev_hash = prev.clone();
        record.hash = chain_hash(&prev, record);
        prev = record.hash.clone();
        deployment
            .sql(&format!(
                "UPDATE audit_log SET arguments = '{}', outcome = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
                serde_json::to_string(&record.entry.arguments).expect("json"),
                record.entry.outcome,
                record.prev_hash,
                record.hash,
                record.seq
            ))
            .await;
    }
    store.close().await;
    // The rewrite is a good one: the chain alone cannot tell.
    let store = deployment.store().await;
    assert_eq!(store.verify_audit().await.expect("verify"), None);
    store.close().await;
}

fn assert_fails(result: &(Option<i32>, String), names: &[&str]) {
    let (code, output) = result;
    assert_eq!(*code, Some(1), "audit verify should fail: {output}");
    for name in names {
        assert!(output.contains(name), "{name:?} not in: {output}");
    }
}

fn assert_passes(result: &(Option<i32>, String), entries: usize) {
    let (code, output) = result;
    assert_eq!(*code, Some(0), "audit verify should pass: {output}");
    assert!(
        output.contains(&format!("audit chain intact: {entries} entries")),
        "{output}"
    );
}

#[tokio::test]
async fn audit_verify_names_truncation_full_deletion_and_a_recomputed_rewrite() {
    let deployment = Deployment::new().await;
    let (server, url) = deployment.serve();
    audited_calls(&url, "A", 3).await;
    // A checkpoint on demand, while the server runs.
    let out = deployment.run(&["audit", "checkpoint"]);
    assert!(out.status.success(), "{out:?}");
    let on_demand: Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("the checkpoint as JSON");
    assert_eq!(on_demand["seq"], 3, "{on_demand}");
    audited_calls(&url, "B", 3).await;
    stop(server, "-INT");

    // The graceful stop wrote a checkpoint of the head: 6 entries.
    let checkpoints = deployment.checkpoints();
    let last = checkpoints.last().expect("a checkpoint was written");
    assert_eq!(last["seq"], 6, "{checkpoints:?}");
    let store = deployment.store().await;
    let records = store.audit_records(None).await.expect("records");
    store.close().await;
    assert_eq!(records.len(), 6);
    assert_eq!(last["head"], records[5].hash.as_str());
    for field in ["at", "key_id", "sig"] {
        assert!(last[field].is_string(), "{field}: {last}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(deployment.data_dir().join(KEY_FILE))
            .expect("the signing key file was created")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let public_key = deployment.public_key();

    // Untampered: passes, with the box's key and with the operator's copy of the public key.
    assert_passes(&deployment.verify(&[]), 6);
    assert_passes(&deployment.verify(&["--public-key", &public_key]), 6);
    deployment.backup().await;

    // 1. The newest rows deleted.
    deployment.sql("DELETE FROM audit_log WHERE seq > 4").await;
    assert_fails(&deployment.verify(&[]), &["TRUNCATED", "4 entries", "6"]);
    deployment.restore().await;
    assert_passes(&deployment.verify(&[]), 6);

    // 2. Every row deleted.
    deployment.sql("DELETE FROM audit_log").await;
    assert_fails(&deployment.verify(&[]), &["DELETED", "empty"]);
    deployment.restore().await;

    // 3. A row edited and every hash after it recomputed: before the on-demand checkpoint ...
    rewrite_and_rehash(&deployment, 2).await;
    assert_fails(&deployment.verify(&[]), &["REWRITTEN", "entry 3"]);
    deployment.restore().await;
    // ... and after it (only the shutdown checkpoint covers it).
    rewrite_and_rehash(&deployment, 5).await;
    assert_fails(&deployment.verify(&[]), &["REWRITTEN", "entry 6"]);
    deployment.restore().await;
    assert_passes(&deployment.verify(&["--public-key", &public_key]), 6);

    // 4. The tail cut and new rows appended in its place.
    deployment.sql("DELETE FROM audit_log WHERE seq > 3").await;
    let (server, url) = deployment.serve();
    audited_calls(&url, "C", 3).await;
    stop(server, "-TERM");
    assert_fails(&deployment.verify(&[]), &["REWRITTEN", "entry 6"]);
}

#[tokio::test]
async fn a_forged_checkpoint_is_rejected() {
    use ed25519_dalek::{Signer, SigningKey};
    let deployment = Deployment::new().await;
    let (server, url) = deployment.serve();
    audited_calls(&url, "F", 4).await;
    stop(server, "-INT");
    let public_key = deployment.public_key();
    let real = deployment
        .checkpoints()
        .last()
        .cloned()
        .expect("checkpoint");
    assert_eq!(real["seq"], 4);

    // The intruder cuts the last two rows and appends a checkpoint of the shorter chain, with
    // the real key id, signed with a key of their own.
    deployment.sql("DELETE FROM audit_log WHERE seq > 2").await;
    let store = deployment.store().await;
    let head = store.audit_records(None).await.expect("records")[1]
        .hash
        .clone();
    store.close().await;
    let intruder = SigningKey::from_bytes(&[7u8; 32]);
    let mut forged = real.clone();
    forged["seq"] = json!(2);
    forged["head"] = json!(head);
    let map = forged.as_object_mut().expect("object");
    map.remove("sig");
    let message = paywarden::canonical::canonical_json(&Value::Object(map.clone()));
    let signature = intruder.sign(message.as_bytes());
    map.insert(
        "sig".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())),
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(deployment.data_dir().join(CHECKPOINTS))
        .expect("checkpoint file");
    writeln!(file, "{forged}").expect("written");
    drop(file);
    let result = deployment.verify(&[]);
    assert_fails(&result, &["FORGED", "TRUNCATED"]);

    // The intruder replaces the box's signing key too, and has paywarden sign the short
    // chain: the operator's copy of the public key still tells.
    let seed = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    std::fs::write(deployment.data_dir().join(KEY_FILE), format!("{seed}\n")).expect("key");
    let out = deployment.run(&["audit", "checkpoint", "--adopt-key"]);
    assert!(out.status.success(), "{out:?}");
    assert_fails(
        &deployment.verify(&["--public-key", &public_key]),
        &["FORGED", "TRUNCATED"],
    );
    // With the replaced key on the box, the real checkpoints no longer verify: named as well.
    assert_fails(&deployment.verify(&[]), &["FORGED"]);
}

#[tokio::test]
async fn a_second_replica_with_another_signing_key_refuses_to_start() {
    let deployment = Deployment::new().await;
    let (server, _url) = deployment.serve();
    stop(server, "-INT");
    // Same database, another data directory: another key is generated there.
    let other = tempfile::tempdir().expect("tempdir");
    let mut replica = deployment.command_in(
        other.path(),
        &["serve", "--listen", "127.0.0.1:0", "--no-seed"],
    );
    if deployment.database.url.is_none() {
        replica.env("PAYWARDEN_DATABASE_URL", deployment.database_url());
    }
    let out = replica.stdin(Stdio::null()).output().expect("replica runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audit signing key") && err.contains("same key"),
        "{err}"
    );
    // The first key is still the database's.
    assert_passes(&deployment.verify(&[]), 0);
}

#[tokio::test]
async fn stdio_writes_a_checkpoint_when_its_input_closes() {
    let deployment = Deployment::new().await;
    let mut child = deployment
        .command(&["stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("stdio starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let proc = Proc(child);
    let mut send = |message: Value| {
        writeln!(stdin, "{message}").expect("written");
        stdin.flush().expect("flushed");
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "stdio-test", "version": "1"}}}),
    );
    let _ = lines.next().expect("initialize answered");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    for i in 0..2 {
        send(
            json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call", "params": {
            "name": "multibanco_create_reference",
            "arguments": {"mb_key": IFTHENPAY_MB_KEY, "order_id": format!("S-{i}"), "amount": 5}}}),
        );
        let answer: Value =
            serde_json::from_str(&lines.next().expect("answered").expect("line")).expect("JSON");
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    drop(stdin);
    let mut proc = proc;
    let deadline = Instant::now() + Duration::from_secs(30);
    while proc.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "stdio did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = deployment
        .checkpoints()
        .last()
        .cloned()
        .expect("checkpoint");
    assert_eq!(last["seq"], 2, "{last}");
    assert_passes(&deployment.verify(&[]), 2);
    deployment.sql("DELETE FROM audit_log").await;
    assert_fails(&deployment.verify(&[]), &["DELETED"]);
}

/// Every 64-bit-or-longer unsalted digest an attacker would try against a key id.
fn unsalted_candidates(key: &str) -> Vec<String> {
    let sha256 = hex::encode(Sha256::digest(key.as_bytes()));
    let sha512 = hex::encode(sha2::Sha512::digest(key.as_bytes()));
    let mut out = Vec::new();
    for digest in [sha256, sha512] {
        for len in (8..=digest.len()).step_by(8) {
            out.push(digest[..len].to_string());
        }
    }
    out
}

/// The `key:<id>` entities of an audit export.
fn key_ids_in_export(deployment: &Deployment) -> Vec<String> {
    let out = deployment.run(&["audit", "export"]);
    assert!(out.status.success(), "{out:?}");
    let export = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !export.contains(IFTHENPAY_MB_KEY),
        "the key itself is in the export"
    );
    let mut ids: Vec<String> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["entity_id"].as_str().map(String::from))
        .filter_map(|e| e.strip_prefix("key:").map(String::from))
        .collect();
    ids.dedup();
    ids
}

#[tokio::test]
async fn ifthenpay_keys_cannot_be_recovered_from_the_audit_export() {
    let deployment = Deployment::new().await;
    let (server, url) = deployment.serve();
    audited_calls(&url, "K", 1).await;
    stop(server, "-INT");
    let ids = key_ids_in_export(&deployment);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];

    // Brute force over the PWD-1000xx space with every unsalted digest.
    let started = Instant::now();
    let recovered: Vec<String> = (100_000..=100_099)
        .map(|n| format!("PWD-{n}"))
        .filter(|candidate| unsalted_candidates(candidate).iter().any(|c| c == id))
        .collect();
    assert!(
        recovered.is_empty(),
        "recovered {recovered:?} from key:{id} in {:?}",
        started.elapsed()
    );

    // The id is keyed by this deployment's secret: stable across restarts (the key's requests
    // stay its own), different in another deployment.
    let (server, url) = deployment.serve();
    audited_calls(&url, "K2", 1).await;
    stop(server, "-INT");
    assert_eq!(key_ids_in_export(&deployment), vec![id.clone()]);
    let other = Deployment::new().await;
    let (server, url) = other.serve();
    audited_calls(&url, "K", 1).await;
    stop(server, "-INT");
    let other_ids = key_ids_in_export(&other);
    assert_eq!(other_ids.len(), 1);
    assert_ne!(&other_ids[0], id);
}

#[tokio::test]
async fn checkpoints_reach_the_command_sink_and_the_shipped_copy_still_tells_after_the_box_lost_its_own(
) {
    let mut deployment = Deployment::new().await;
    let shipped = deployment.data_dir().join("offbox").join("shipped.jsonl");
    std::fs::create_dir_all(shipped.parent().expect("parent")).expect("offbox dir");
    deployment.env.push((
        "PAYWARDEN_AUDIT__CHECKPOINT_COMMAND".into(),
        format!("cat >> '{}'", shipped.display()),
    ));
    let (server, url) = deployment.serve();
    audited_calls(&url, "S", 3).await;
    stop(server, "-TERM");
    let local = std::fs::read_to_string(deployment.data_dir().join(CHECKPOINTS)).expect("local");
    let copy = std::fs::read_to_string(&shipped).expect("the command received the checkpoints");
    assert_eq!(local, copy);
    let public_key = deployment.public_key();
    let shipped_arg = shipped.to_string_lossy().to_string();
    let from_copy = ["--checkpoints", &shipped_arg, "--public-key", &public_key];
    assert_passes(&deployment.verify(&from_copy), 3);

    // The intruder deletes the box's checkpoint file and the newest entries.
    std::fs::remove_file(deployment.data_dir().join(CHECKPOINTS)).expect("removed");
    deployment.sql("DELETE FROM audit_log WHERE seq > 1").await;
    let (code, output) = deployment.verify(&[]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("NOT ANCHORED"), "{output}");
    assert_fails(
        &deployment.verify(&["--require-checkpoint"]),
        &["NOT ANCHORED"],
    );
    assert_fails(
        &deployment.verify(&from_copy),
        &["TRUNCATED", "has 1 entry,", "records 3 entries"],
    );

    // A sink command that fails is logged; the file still gets the checkpoint.
    deployment.env.push((
        "PAYWARDEN_AUDIT__CHECKPOINT_COMMAND".into(),
        "exit 3".into(),
    ));
    let out = deployment.run(&["audit", "checkpoint"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checkpoint_command failed"),
        "{out:?}"
    );
    assert_eq!(deployment.checkpoints().len(), 1);
}
