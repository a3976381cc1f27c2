//! Approval requests: the store's state machine (expiry, one decision, one execution, entity
//! isolation, concurrency), the operator page over real HTTP (authentication, CSRF, Origin,
//! rendering, decisions), and the `paywarden approvals` CLI functions.

mod common;

use clap::Parser;
use paywarden::{
    approvals_http,
    cli_approvals::{self, ApprovalsAction, EXIT_OK, EXIT_REFUSED, EXIT_USAGE},
    config::OperatorConfig,
    store::{Approval, ApprovalError, ApprovalStatus, NewApproval, Store},
};
use reqwest::{header, redirect, StatusCode};
use sha2::{Digest, Sha256};

const ENTITY: &str = "8ac7a4c9000000000000000000000001";
const OTHER_ENTITY: &str = "8ac7a4c9000000000000000000000002";
const REFERENCE: &str = "8ac7a4c98f0c4b1a9b1e2d3c4b5a6978";
const HASH: &str = "5d41402abc4b2a76b9719d911017c592a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// A fresh store: SQLite in a temporary directory, or a fresh PostgreSQL database when
/// `PAYWARDEN_TEST_DATABASE=postgres`.
async fn open_store() -> (Store, (tempfile::TempDir, common::TestDatabase)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = common::TestDatabase::fresh().await;
    let store = database.store(dir.path()).await;
    (store, (dir, database))
}

fn new_approval(entity: &str, ttl: chrono::Duration) -> NewApproval {
    NewApproval {
        entity_id: entity.to_string(),
        client_name: Some("test-agent".into()),
        toolset: "opp".into(),
        tool: "refund".into(),
        arguments: serde_json::json!({
            "referenceId": REFERENCE,
            "amount": "12.34",
            "currency": "EUR",
            "idempotencyKey": "refund-1",
        }),
        request_hash: HASH.into(),
        preview: serde_json::json!({
            "operation": "refund",
            "amount": "12.34",
            "currency": "EUR",
            "amount_minor": 1234,
            "reference_id": REFERENCE,
            "from": "the merchant (entity 8ac7a4c9000000000000000000000001)",
            "to": "card holder Jane Doe, VISA ending 1111",
            "sandbox": true,
        }),
        rule: "large_refund".into(),
        message: "Refunds over 10.00 EUR need a person.".into(),
        ttl,
    }
}

async fn pending(store: &Store) -> Approval {
    store
        .create_approval(new_approval(ENTITY, chrono::Duration::hours(24)))
        .await
        .expect("create")
}

// ---------------------------------------------------------------------------------------------
// Store

#[tokio::test]
async fn a_new_request_is_pending_and_reads_back() {
    let (store, _dir) = open_store().await;
    let created = pending(&store).await;
    assert!(created.id.starts_with("apr_") && created.id.len() == 36);
    assert_eq!(created.status, ApprovalStatus::Pending);
    assert!(created.expires_at > created.created_at);
    assert_eq!(created.decided_by, None);
    let read = store
        .approval(&created.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read, created);
    let listed = store
        .list_approvals(Some(ApprovalStatus::Pending))
        .await
        .expect("list");
    assert_eq!(listed, vec![created.clone()]);
    assert!(store
        .list_approvals(Some(ApprovalStatus::Approved))
        .await
        .expect("list")
        .is_empty());
    assert!(store
        .approval("apr_00000000000000000000000000000000")
        .await
        .expect("read")
        .is_none());
    let second = pending(&store).await;
    assert_ne!(second.id, created.id);
    let all = store.list_approvals(None).await.expect("list");
    assert_eq!(all.len(), 2);
}

#[tokio::test]
async fn a_decision_is_recorded_once() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    let approved = store
        .decide_approval(&a.id, true, "alice", Some("  looks right  "))
        .await
        .expect("approve");
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("alice"));
    assert_eq!(approved.decision_note.as_deref(), Some("looks right"));
    assert!(approved.decided_at.is_some());

    for approve in [true, false] {
        match store.decide_approval(&a.id, approve, "bob", None).await {
            Err(ApprovalError::NotPending { id, status }) => {
                assert_eq!(id, a.id);
                assert_eq!(status, ApprovalStatus::Approved);
            }
            other => panic!("a second decision must be refused, got {other:?}"),
        }
    }
    let read = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(read.decided_by.as_deref(), Some("alice"));

    let b = pending(&store).await;
    let denied = store
        .decide_approval(&b.id, false, "bob", Some("   "))
        .await
        .expect("deny");
    assert_eq!(denied.status, ApprovalStatus::Denied);
    assert_eq!(denied.decision_note, None);
    let err = store
        .decide_approval(&b.id, true, "alice", None)
        .await
        .expect_err("denied stays denied");
    assert!(err.to_string().contains("already denied"), "{err}");

    assert!(matches!(
        store
            .decide_approval("apr_00000000000000000000000000000000", true, "alice", None)
            .await,
        Err(ApprovalError::NotFound { .. })
    ));
}

#[tokio::test]
async fn concurrent_decisions_have_exactly_one_winner() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            let id = a.id.clone();
            tokio::spawn(async move {
                store
                    .decide_approval(&id, i % 2 == 0, &format!("operator{i}"), None)
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => wins += 1,
            Err(ApprovalError::NotPending { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn requests_expire_undecided() {
    let (store, _dir) = open_store().await;
    let a = store
        .create_approval(new_approval(ENTITY, chrono::Duration::milliseconds(300)))
        .await
        .expect("create");
    assert_eq!(a.status, ApprovalStatus::Pending);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;

    let read = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(read.status, ApprovalStatus::Expired);
    assert!(store
        .list_approvals(Some(ApprovalStatus::Pending))
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store
            .list_approvals(Some(ApprovalStatus::Expired))
            .await
            .expect("list")
            .len(),
        1
    );
    let err = store
        .decide_approval(&a.id, true, "alice", None)
        .await
        .expect_err("expired");
    assert!(matches!(err, ApprovalError::Expired { .. }), "{err:?}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(matches!(
        store.claim_approval(&a.id, ENTITY, HASH).await,
        Err(ApprovalError::NotApproved {
            status: ApprovalStatus::Expired,
            ..
        })
    ));

    // Expired at once (a zero or negative ttl), and decided without a read first.
    let b = store
        .create_approval(new_approval(ENTITY, chrono::Duration::seconds(-5)))
        .await
        .expect("create");
    assert_eq!(b.status, ApprovalStatus::Expired);
    assert!(matches!(
        store.decide_approval(&b.id, false, "alice", None).await,
        Err(ApprovalError::Expired { .. })
    ));
}

#[tokio::test]
async fn twenty_concurrent_claims_execute_once() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    store
        .decide_approval(&a.id, true, "alice", None)
        .await
        .expect("approve");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let id = a.id.clone();
            tokio::spawn(async move { store.claim_approval(&id, ENTITY, HASH).await })
        })
        .collect();
    let mut claimed = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(approval) => claimed.push(approval),
            Err(ApprovalError::NotApproved {
                status: ApprovalStatus::Executing,
                ..
            }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(claimed.len(), 1, "exactly one claim wins");
    assert_eq!(claimed[0].status, ApprovalStatus::Executing);

    let outcome =
        serde_json::json!({"id": "8ac7a4c9refund0001", "result": {"code": "000.100.110"}});
    store
        .finish_approval(&a.id, &outcome)
        .await
        .expect("finish");
    let done = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(done.status, ApprovalStatus::Executed);
    assert_eq!(done.outcome, Some(outcome.clone()));
    assert!(done.executed_at.is_some());
    let err = store
        .claim_approval(&a.id, ENTITY, HASH)
        .await
        .expect_err("used once");
    assert!(matches!(
        err,
        ApprovalError::NotApproved {
            status: ApprovalStatus::Executed,
            ..
        }
    ));
    assert!(err.to_string().contains("already executed"), "{err}");
    assert!(
        store.finish_approval(&a.id, &outcome).await.is_err(),
        "finishing twice is an error"
    );
}

#[tokio::test]
async fn claims_check_entity_hash_and_status() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;

    // Still pending.
    assert!(matches!(
        store.claim_approval(&a.id, ENTITY, HASH).await,
        Err(ApprovalError::NotApproved {
            status: ApprovalStatus::Pending,
            ..
        })
    ));
    store
        .decide_approval(&a.id, true, "alice", None)
        .await
        .expect("approve");

    // Another entity learns nothing: same message as an unknown id.
    let wrong = store
        .claim_approval(&a.id, OTHER_ENTITY, HASH)
        .await
        .expect_err("other entity");
    assert!(
        matches!(wrong, ApprovalError::WrongEntity { .. }),
        "{wrong:?}"
    );
    let unknown = store
        .claim_approval("apr_00000000000000000000000000000000", OTHER_ENTITY, HASH)
        .await
        .expect_err("unknown");
    assert!(matches!(unknown, ApprovalError::NotFound { .. }));
    let text = wrong.to_string();
    for secret in [ENTITY, "refund", "12.34", "alice", "approved"] {
        assert!(!text.contains(secret), "{text} reveals {secret}");
    }
    assert_eq!(
        text.replace(&a.id, "ID"),
        unknown
            .to_string()
            .replace("apr_00000000000000000000000000000000", "ID")
    );

    // Different arguments than approved.
    assert!(matches!(
        store.claim_approval(&a.id, ENTITY, "0000").await,
        Err(ApprovalError::Mismatch { .. })
    ));
    // Neither attempt used the approval up.
    let claimed = store
        .claim_approval(&a.id, ENTITY, HASH)
        .await
        .expect("claim");
    assert_eq!(claimed.status, ApprovalStatus::Executing);

    // A failed execution can give the claim back; then it can be claimed again.
    assert!(store.release_approval(&a.id).await.expect("release"));
    assert!(!store.release_approval(&a.id).await.expect("release"));
    store
        .claim_approval(&a.id, ENTITY, HASH)
        .await
        .expect("claim again");

    // A denied request never executes.
    let b = pending(&store).await;
    store
        .decide_approval(&b.id, false, "alice", None)
        .await
        .expect("deny");
    let err = store
        .claim_approval(&b.id, ENTITY, HASH)
        .await
        .expect_err("denied");
    assert!(matches!(
        err,
        ApprovalError::NotApproved {
            status: ApprovalStatus::Denied,
            ..
        }
    ));
    assert!(err.to_string().contains("denied"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The operator page over HTTP

fn operator(name: &str, token: &str) -> OperatorConfig {
    OperatorConfig {
        name: name.into(),
        token_sha256: hex::encode(Sha256::digest(token.as_bytes())),
    }
}

fn operators() -> Vec<OperatorConfig> {
    vec![
        operator("alice", "alice-token"),
        operator("bob", "bob-token"),
    ]
}

/// Serves the approval router on a loopback port; returns its base URL.
async fn serve(store: Store, operators: Vec<OperatorConfig>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = approvals_http::router(store, operators);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client")
}

struct Page {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

async fn get(base: &str, path: &str, auth: Option<(&str, &str)>) -> Page {
    let mut request = client().get(format!("{base}{path}"));
    if let Some((user, token)) = auth {
        request = request.basic_auth(user, Some(token));
    }
    let response = request.send().await.expect("GET");
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

async fn post(
    base: &str,
    id: &str,
    auth: Option<(&str, &str)>,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> Page {
    let mut request = client()
        .post(format!("{base}/approvals/{id}/decision"))
        .form(form);
    if let Some((user, token)) = auth {
        request = request.basic_auth(user, Some(token));
    }
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    let response = request.send().await.expect("POST");
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

const ALICE: Option<(&str, &str)> = Some(("alice", "alice-token"));
const BOB: Option<(&str, &str)> = Some(("bob", "bob-token"));

/// The CSRF token in a decision form.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("the page has a CSRF field") + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_string()
}

fn assert_hardened(page: &Page) {
    let h = |name: &str| {
        page.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        h("content-security-policy"),
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    );
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("cache-control"), "no-store");
}

#[tokio::test]
async fn without_operators_the_page_is_503_and_says_how_to_configure() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    let base = serve(store, Vec::new()).await;
    for path in ["/approvals".to_string(), format!("/approvals/{}", a.id)] {
        let page = get(&base, &path, ALICE).await;
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(page.body.contains("[[operators]]"), "{}", page.body);
        assert!(page.body.contains("token_sha256"));
        assert!(!page.body.contains(&a.id) && !page.body.contains("12.34"));
        assert_hardened(&page);
    }
    let page = post(&base, &a.id, ALICE, None, &[("decision", "approve")]).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);

    // Operators with a malformed hash cannot sign in either, and are named.
    let (store, _dir2) = open_store().await;
    let base = serve(
        store,
        vec![OperatorConfig {
            name: "carol".into(),
            token_sha256: "not-hex".into(),
        }],
    )
    .await;
    let page = get(&base, "/approvals", Some(("carol", "not-hex"))).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.body.contains("carol"), "{}", page.body);
}

#[tokio::test]
async fn without_valid_credentials_every_route_is_401_with_no_data() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    let base = serve(store.clone(), operators()).await;
    let wrong = [
        None,
        Some(("alice", "wrong-token")),
        Some(("alice", "bob-token")),
        Some(("mallory", "alice-token")),
        Some(("", "")),
    ];
    for auth in wrong {
        for path in ["/approvals".to_string(), format!("/approvals/{}", a.id)] {
            let page = get(&base, &path, auth).await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
            assert_eq!(
                page.headers
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok()),
                Some("Basic realm=\"paywarden approvals\"")
            );
            for data in ["12.34", "refund", REFERENCE, ENTITY, "large_refund"] {
                assert!(!page.body.contains(data), "401 page shows {data}");
            }
            assert_hardened(&page);
        }
        let page = post(&base, &a.id, auth, None, &[("decision", "approve")]).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    // A malformed Authorization header is also just 401.
    let response = client()
        .get(format!("{base}/approvals"))
        .header(header::AUTHORIZATION, "Basic %%%not-base64")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let read = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(read.status, ApprovalStatus::Pending);
}

#[tokio::test]
async fn the_page_shows_exactly_what_will_move() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    let base = serve(store, operators()).await;

    let list = get(&base, "/approvals", ALICE).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_hardened(&list);
    assert!(list.body.contains(&format!("href=\"/approvals/{}\"", a.id)));
    for text in [
        "opp/refund",
        ENTITY,
        "€12.34",
        "SANDBOX",
        "signed in as <strong>alice",
    ] {
        assert!(list.body.contains(text), "list lacks {text}");
    }

    let page = get(&base, &format!("/approvals/{}", a.id), ALICE).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_hardened(&page);
    assert!(page
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html")));
    for text in [
        "€12.34",
        REFERENCE,
        "refund",
        "opp/refund",
        ENTITY,
        "test-agent",
        "large_refund",
        "Refunds over 10.00 EUR need a person.",
        "card holder Jane Doe, VISA ending 1111",
        "the merchant (entity",
        "SANDBOX",
        "&quot;idempotencyKey&quot;: &quot;refund-1&quot;",
        "name=\"decision\" value=\"approve\"",
        "name=\"decision\" value=\"deny\"",
        "name=\"note\"",
    ] {
        assert!(
            page.body.contains(text),
            "page lacks {text}:\n{}",
            page.body
        );
    }
    assert_eq!(csrf_of(&page.body).len(), 64);

    let missing = get(
        &base,
        "/approvals/apr_00000000000000000000000000000000",
        ALICE,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let malformed = get(&base, "/approvals/..%2F..%2Fetc", ALICE).await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_service_preview_shape_renders() {
    let (store, _dir) = open_store().await;
    let mut new = new_approval(ENTITY, chrono::Duration::hours(1));
    new.preview = serde_json::json!({
        "tool": "refund",
        "operation": "refund (RF)",
        "entity": ENTITY,
        "referenceId": REFERENCE,
        "referencePaymentType": "DB",
        "amount": "0.500",
        "amountMinor": 500,
        "currency": "KWD",
        "from": "the merchant",
        "to": "the card holder",
        "sandbox": false,
        "riskScore": 7,
    });
    let a = store.create_approval(new).await.expect("create");
    let base = serve(store, operators()).await;
    let page = get(&base, &format!("/approvals/{}", a.id), ALICE).await;
    for text in [
        "<strong>refund (RF)</strong>",
        "0.500 KWD",
        "(payment type DB)",
        "<dt>Risk score</dt><dd>7</dd>",
    ] {
        assert!(
            page.body.contains(text),
            "page lacks {text}:\n{}",
            page.body
        );
    }
    for hidden in [
        "SANDBOX",
        "<dt>Amount minor</dt>",
        "<dt>Entity</dt><dd>8ac",
        "<dt>Tool</dt><dd>refund",
    ] {
        assert!(!page.body.contains(hidden), "page shows {hidden}");
    }
    let list = get(&base, "/approvals", ALICE).await;
    assert!(
        list.body.contains("<strong>refund (RF)</strong>"),
        "{}",
        list.body
    );
    assert!(list.body.contains(&format!(
        "0.500 KWD</span> of <code class=\"id\">{REFERENCE}</code>"
    )));
}

#[tokio::test]
async fn every_dynamic_value_is_escaped() {
    let (store, _dir) = open_store().await;
    let mut new = new_approval(ENTITY, chrono::Duration::hours(1));
    new.message = "<script>alert('m')</script>".into();
    new.client_name = Some("<img src=x onerror=alert(1)>".into());
    new.preview["to"] = serde_json::json!("\"><b>to</b>");
    new.preview["extra"] = serde_json::json!({"<i>k</i>": "<u>v</u>"});
    new.arguments["merchantTransactionId"] = serde_json::json!("</pre><script>x</script>");
    let a = store.create_approval(new).await.expect("create");
    let base = serve(store, operators()).await;
    let page = get(&base, &format!("/approvals/{}", a.id), ALICE).await;
    assert_eq!(page.status, StatusCode::OK);
    for raw in ["<script", "<img", "<b>to", "<i>k", "<u>v"] {
        assert!(!page.body.contains(raw), "unescaped {raw}");
    }
    assert!(page.body.contains("&lt;script&gt;alert("));
    assert!(
        page.body.contains("&lt;&#x2f;pre&gt;&lt;script&gt;x"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn approving_through_the_form_records_the_operator() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    let base = serve(store.clone(), operators()).await;
    let path = format!("/approvals/{}", a.id);
    let csrf = csrf_of(&get(&base, &path, ALICE).await.body);

    let page = post(
        &base,
        &a.id,
        ALICE,
        Some(&base),
        &[
            ("decision", "approve"),
            ("note", "checked the order"),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(
        page.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some(path.as_str())
    );
    assert_hardened(&page);

    let stored = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(stored.status, ApprovalStatus::Approved);
    assert_eq!(stored.decided_by.as_deref(), Some("alice"));
    assert_eq!(stored.decision_note.as_deref(), Some("checked the order"));

    let result = get(&base, &path, ALICE).await;
    assert!(
        result
            .body
            .contains("<strong>Approved</strong> by <strong class=\"operator\">alice</strong>"),
        "{}",
        result.body
    );
    assert!(result.body.contains("checked the order"));
    assert!(
        !result.body.contains("name=\"csrf\""),
        "no form once decided"
    );

    // Deciding again, even with a valid token, is refused and changes nothing.
    let again = post(
        &base,
        &a.id,
        ALICE,
        None,
        &[("decision", "deny"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("already approved"), "{}", again.body);
    let stored = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(stored.status, ApprovalStatus::Approved);
    assert_eq!(stored.decided_by.as_deref(), Some("alice"));
}

#[tokio::test]
async fn denying_through_the_form_works() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    let base = serve(store.clone(), operators()).await;
    let csrf = csrf_of(&get(&base, &format!("/approvals/{}", a.id), BOB).await.body);
    let page = post(
        &base,
        &a.id,
        BOB,
        None,
        &[("decision", "deny"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let stored = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(stored.status, ApprovalStatus::Denied);
    assert_eq!(stored.decided_by.as_deref(), Some("bob"));
    assert_eq!(stored.decision_note, None);
    let result = get(&base, &format!("/approvals/{}", a.id), ALICE).await;
    assert!(result
        .body
        .contains("<strong>Denied</strong> by <strong class=\"operator\">bob</strong>"));
    // Decided requests leave the pending list; `?all=1` still shows them.
    assert!(!get(&base, "/approvals", ALICE).await.body.contains(&a.id));
    assert!(get(&base, "/approvals?all=1", ALICE)
        .await
        .body
        .contains(&a.id));
}

/// (what, credentials, Origin header, form, expected status).
type Forgery<'a> = (
    &'a str,
    Option<(&'a str, &'a str)>,
    Option<&'a str>,
    Vec<(&'a str, &'a str)>,
    StatusCode,
);

#[tokio::test]
async fn forged_decisions_are_refused() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    let b = pending(&store).await;
    let base = serve(store.clone(), operators()).await;
    let csrf_a_alice = csrf_of(
        &get(&base, &format!("/approvals/{}", a.id), ALICE)
            .await
            .body,
    );
    let csrf_b_alice = csrf_of(
        &get(&base, &format!("/approvals/{}", b.id), ALICE)
            .await
            .body,
    );

    let cases: Vec<Forgery> = vec![
        (
            "no csrf",
            ALICE,
            None,
            vec![("decision", "approve")],
            StatusCode::FORBIDDEN,
        ),
        (
            "empty csrf",
            ALICE,
            None,
            vec![("decision", "approve"), ("csrf", "")],
            StatusCode::FORBIDDEN,
        ),
        (
            "another request's csrf",
            ALICE,
            None,
            vec![("decision", "approve"), ("csrf", &csrf_b_alice)],
            StatusCode::FORBIDDEN,
        ),
        (
            "another operator's csrf",
            BOB,
            None,
            vec![("decision", "approve"), ("csrf", &csrf_a_alice)],
            StatusCode::FORBIDDEN,
        ),
        (
            "foreign origin",
            ALICE,
            Some("http://evil.example"),
            vec![("decision", "approve"), ("csrf", &csrf_a_alice)],
            StatusCode::FORBIDDEN,
        ),
        (
            "opaque origin",
            ALICE,
            Some("null"),
            vec![("decision", "approve"), ("csrf", &csrf_a_alice)],
            StatusCode::FORBIDDEN,
        ),
        (
            "no credentials",
            None,
            None,
            vec![("decision", "approve"), ("csrf", &csrf_a_alice)],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown decision",
            ALICE,
            None,
            vec![("decision", "maybe"), ("csrf", &csrf_a_alice)],
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, auth, origin, form, expected) in cases {
        let page = post(&base, &a.id, auth, origin, &form).await;
        assert_eq!(page.status, expected, "{what}: {}", page.body);
        let stored = store.approval(&a.id).await.expect("read").expect("found");
        assert_eq!(stored.status, ApprovalStatus::Pending, "{what} decided");
    }
    // A cross-site browser request (Sec-Fetch-Site) is refused even without Origin.
    let response = client()
        .post(format!("{base}/approvals/{}/decision", a.id))
        .basic_auth("alice", Some("alice-token"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("decision", "approve"), ("csrf", &csrf_a_alice)])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let stored = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(stored.status, ApprovalStatus::Pending);
}

#[tokio::test]
async fn expired_requests_cannot_be_approved() {
    let (store, _dir) = open_store().await;
    let a = store
        .create_approval(new_approval(ENTITY, chrono::Duration::milliseconds(500)))
        .await
        .expect("create");
    let base = serve(store.clone(), operators()).await;
    let csrf = csrf_of(
        &get(&base, &format!("/approvals/{}", a.id), ALICE)
            .await
            .body,
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let page = post(
        &base,
        &a.id,
        ALICE,
        None,
        &[("decision", "approve"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("expired"), "{}", page.body);
    let stored = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(stored.status, ApprovalStatus::Expired);
    assert_eq!(stored.decided_by, None);
    let view = get(&base, &format!("/approvals/{}", a.id), ALICE).await;
    assert!(view.body.contains("badge expired"));
    assert!(!view.body.contains("name=\"csrf\""));
    assert!(!get(&base, "/approvals", ALICE).await.body.contains(&a.id));
}

#[test]
fn approval_urls_point_at_the_page() {
    assert_eq!(
        approvals_http::approval_url("https://pay.example.com/", "apr_ab"),
        "https://pay.example.com/approvals/apr_ab"
    );
}

// ---------------------------------------------------------------------------------------------
// CLI

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    action: ApprovalsAction,
}

#[test]
fn the_cli_parses_as_documented() {
    let cli = Cli::try_parse_from([
        "approvals",
        "approve",
        "apr_1",
        "--as",
        "bob",
        "--note",
        "ok",
    ])
    .expect("parse");
    assert_eq!(
        cli.action,
        ApprovalsAction::Approve {
            id: "apr_1".into(),
            operator: "bob".into(),
            note: Some("ok".into())
        }
    );
    let cli = Cli::try_parse_from(["approvals", "deny", "apr_1"]).expect("parse");
    assert_eq!(
        cli.action,
        ApprovalsAction::Deny {
            id: "apr_1".into(),
            operator: cli_approvals::default_operator(),
            note: None
        }
    );
    assert!(!cli_approvals::default_operator().is_empty());
    let cli = Cli::try_parse_from(["approvals", "list", "--all"]).expect("parse");
    assert_eq!(cli.action, ApprovalsAction::List { all: true });
    assert!(Cli::try_parse_from(["approvals", "show"]).is_err());
}

#[tokio::test]
async fn the_cli_lists_shows_and_decides() {
    let (store, _dir) = open_store().await;
    let out = cli_approvals::execute(&store, ApprovalsAction::List { all: false })
        .await
        .expect("list");
    assert_eq!(out.code, EXIT_OK);
    assert_eq!(out.stdout, "no pending approval requests\n");

    let a = pending(&store).await;
    let b = pending(&store).await;
    let out = cli_approvals::execute(&store, ApprovalsAction::List { all: false })
        .await
        .expect("list");
    assert_eq!(out.code, EXIT_OK);
    assert!(out.stdout.starts_with("ID"), "{}", out.stdout);
    assert!(out.stdout.contains(&a.id) && out.stdout.contains(&b.id));
    assert!(out.stdout.contains("refund 12.34 EUR of"), "{}", out.stdout);

    let out = cli_approvals::execute(&store, ApprovalsAction::Show { id: a.id.clone() })
        .await
        .expect("show");
    assert_eq!(out.code, EXIT_OK);
    for text in [
        "[PENDING]",
        "SANDBOX",
        "12.34 EUR",
        "large_refund",
        "\"idempotencyKey\": \"refund-1\"",
    ] {
        assert!(
            out.stdout.contains(text),
            "show lacks {text}:\n{}",
            out.stdout
        );
    }

    let approve = |id: &str, operator: &str| ApprovalsAction::Approve {
        id: id.into(),
        operator: operator.into(),
        note: Some("via cli".into()),
    };
    let out = cli_approvals::execute(&store, approve(&a.id, "alice"))
        .await
        .expect("approve");
    assert_eq!(out.code, EXIT_OK, "{}", out.stderr);
    assert!(
        out.stdout.starts_with(&format!("approved {}", a.id)),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("as alice"));
    let stored = store.approval(&a.id).await.expect("read").expect("found");
    assert_eq!(stored.decided_by.as_deref(), Some("alice"));
    assert_eq!(stored.decision_note.as_deref(), Some("via cli"));

    let out = cli_approvals::execute(
        &store,
        ApprovalsAction::Deny {
            id: a.id.clone(),
            operator: "bob".into(),
            note: None,
        },
    )
    .await
    .expect("deny");
    assert_eq!(out.code, EXIT_REFUSED);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.starts_with(&format!(
            "approval {} is already approved by alice at 20",
            a.id
        )),
        "{}",
        out.stderr
    );

    let out = cli_approvals::execute(
        &store,
        ApprovalsAction::Deny {
            id: b.id.clone(),
            operator: "bob".into(),
            note: None,
        },
    )
    .await
    .expect("deny");
    assert_eq!(out.code, EXIT_OK);
    assert!(out.stdout.starts_with(&format!("denied {}", b.id)));
    let out = cli_approvals::execute(&store, approve(&b.id, "alice"))
        .await
        .expect("approve");
    assert_eq!(out.code, EXIT_REFUSED);
    assert!(
        out.stderr.contains("is already denied by bob at"),
        "{}",
        out.stderr
    );

    let out = cli_approvals::execute(&store, ApprovalsAction::List { all: true })
        .await
        .expect("list");
    assert!(out.stdout.contains("approved") && out.stdout.contains("denied"));
    let out = cli_approvals::execute(&store, ApprovalsAction::List { all: false })
        .await
        .expect("list");
    assert_eq!(out.stdout, "no pending approval requests\n");

    let out = cli_approvals::execute(
        &store,
        ApprovalsAction::Show {
            id: "apr_nope".into(),
        },
    )
    .await
    .expect("show");
    assert_eq!(out.code, EXIT_REFUSED);
    assert!(out.stderr.contains("no approval request apr_nope"));
    let out = cli_approvals::execute(&store, approve("apr_nope", "alice"))
        .await
        .expect("approve");
    assert_eq!(out.code, EXIT_REFUSED);

    let c = pending(&store).await;
    let out = cli_approvals::execute(&store, approve(&c.id, "  "))
        .await
        .expect("approve");
    assert_eq!(out.code, EXIT_USAGE);
    assert!(out.stderr.contains("--as"));

    let expired = store
        .create_approval(new_approval(ENTITY, chrono::Duration::zero()))
        .await
        .expect("create");
    let out = cli_approvals::execute(&store, approve(&expired.id, "alice"))
        .await
        .expect("approve");
    assert_eq!(out.code, EXIT_REFUSED);
    assert!(
        out.stderr.contains("expired at") && out.stderr.contains("can no longer be approved"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn the_cli_reports_executed_requests() {
    let (store, _dir) = open_store().await;
    let a = pending(&store).await;
    store
        .decide_approval(&a.id, true, "alice", None)
        .await
        .expect("approve");
    store
        .claim_approval(&a.id, ENTITY, HASH)
        .await
        .expect("claim");
    store
        .finish_approval(&a.id, &serde_json::json!({"id": "tx1"}))
        .await
        .expect("finish");
    let out = cli_approvals::execute(&store, ApprovalsAction::Show { id: a.id.clone() })
        .await
        .expect("show");
    assert!(out.stdout.contains("[EXECUTED]") && out.stdout.contains("outcome:"));
    let out = cli_approvals::execute(
        &store,
        ApprovalsAction::Deny {
            id: a.id.clone(),
            operator: "bob".into(),
            note: None,
        },
    )
    .await
    .expect("deny");
    assert_eq!(out.code, EXIT_REFUSED);
    assert!(
        out.stderr.contains("was approved by alice at") && out.stderr.contains("already executed"),
        "{}",
        out.stderr
    );
}
