//! The ifthenpay side of the emulator: ifthenpay's public payment API (Multibanco, MB WAY,
//! Payshop, credit card, PinPay, Cofidis Pay, PIX, the v2 payments list and callback
//! activation), offline, with state in the emulator's SQLite file (`migrations/0003_ifthenpay.sql`),
//! plus a control endpoint that plays the shopper.
//!
//! | endpoint | ifthenpay operation |
//! |---|---|
//! | `POST /multibanco/reference/init` | Multibanco reference (`mbKey`, `orderId`, `amount`, `expiryDays`) |
//! | `POST /spg/payment/mbway` | MB WAY payment request (`mbWayKey`, `orderId`, `amount`, `mobileNumber`) |
//! | `GET /spg/payment/mbway/status` | MB WAY status (`mbWayKey`, `requestId`) |
//! | `POST /api/payshop/reference/` | Payshop reference (`payshopkey`, `id`, `valor`, `validade`) |
//! | `POST /creditcard/init/{CCARD_KEY}` | hosted card checkout |
//! | `POST /gateway/pinpay/{GATEWAY_KEY}` | PinPay / Pay-by-Link link and PIN |
//! | `POST /cofidis/init/{COFIDIS_KEY}` | Cofidis Pay checkout (60.00 to 1,000.00 EUR) |
//! | `POST /pix/init/{PIX_KEY}` | PIX checkout and QR value (BRL) |
//! | `POST /v2/payments/read` | completed payments by backoffice key (`boKey`) |
//! | `POST /api/endpoint/callback/activation` | register the callback URL and anti-phishing key of a key |
//! | `POST /sandbox/ifthenpay/shopper` | emulator only: the shopper pays, rejects or lets expire |
//!
//! Only the fixed demo keys below are accepted. When a payment completes the emulator calls the
//! activated callback URL with a GET, filling ifthenpay's placeholders (`[ANTI_PHISHING_KEY]`,
//! `[ORDER_ID]`, `[AMOUNT]`, `[REQUEST_ID]`, `[ENTITY]`, `[REFERENCE]`, `[PAYMENT_DATETIME]`,
//! `[PAYMENT_METHOD]`), as ifthenpay does. See `docs/emulator.md`.

mod api;
mod shopper;
pub mod values;

use std::time::Duration;

use axum::http::HeaderValue;
use axum::routing::{get, post};
use axum::Router;
use sqlx::SqlitePool;

/// The demo Multibanco key (`mbKey`). Public on purpose: valid only against the emulator.
pub const IFTHENPAY_MB_KEY: &str = "PWD-100001";
/// The demo MB WAY key (`mbWayKey`).
pub const IFTHENPAY_MBWAY_KEY: &str = "PWD-100002";
/// The demo Payshop key (`payshopkey`).
pub const IFTHENPAY_PAYSHOP_KEY: &str = "PWD-100003";
/// The demo credit card key (`CCARD_KEY`).
pub const IFTHENPAY_CCARD_KEY: &str = "PWD-100004";
/// The demo gateway key for PinPay / Pay-by-Link (`GATEWAY_KEY`).
pub const IFTHENPAY_GATEWAY_KEY: &str = "PWD-100005";
/// The demo Cofidis Pay key (`COFIDIS_KEY`).
pub const IFTHENPAY_COFIDIS_KEY: &str = "PWD-100006";
/// The demo PIX key (`PIX_KEY`).
pub const IFTHENPAY_PIX_KEY: &str = "PWD-100007";
/// The demo Google Pay key (usable in PinPay `accounts` as `GOOGLE|...`).
pub const IFTHENPAY_GOOGLE_KEY: &str = "PWD-100008";
/// The demo Apple Pay key (usable in PinPay `accounts` as `APPLE|...`).
pub const IFTHENPAY_APPLE_KEY: &str = "PWD-100009";
/// The demo backoffice key (`boKey`, `chave`): reads the payments of every demo key above.
pub const IFTHENPAY_BACKOFFICE_KEY: &str = "0000-PWDM-0000-0001";
/// The demo anti-phishing key paywarden registers with the emulator and checks on callbacks.
pub const IFTHENPAY_ANTI_PHISHING_KEY: &str = "pw_demo_ifthenpay_antiphishing_sandbox_only";
/// The Multibanco entity (5 digits) of the demo Multibanco key.
pub const IFTHENPAY_MB_ENTITY: &str = "11249";

/// How long an MB WAY request waits for the shopper before it expires (ifthenpay: 4 minutes).
pub const MBWAY_TTL: Duration = Duration::from_secs(240);

/// The methods of the ifthenpay API, as its payment lists name them (`entity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Mb,
    MbWay,
    Payshop,
    Ccard,
    /// PinPay / Pay-by-Link (a gateway key); paid through one of its accounts' methods.
    Pinpay,
    Cofidis,
    Pix,
    Google,
    Apple,
}

impl Method {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Method::Mb => "MB",
            Method::MbWay => "MBWAY",
            Method::Payshop => "PAYSHOP",
            Method::Ccard => "CCARD",
            Method::Pinpay => "PINPAY",
            Method::Cofidis => "COFIDIS",
            Method::Pix => "PIX",
            Method::Google => "GOOGLE",
            Method::Apple => "APPLE",
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<Method> {
        [
            Method::Mb,
            Method::MbWay,
            Method::Payshop,
            Method::Ccard,
            Method::Pinpay,
            Method::Cofidis,
            Method::Pix,
            Method::Google,
            Method::Apple,
        ]
        .into_iter()
        .find(|m| m.code().eq_ignore_ascii_case(code))
    }

    /// The demo key of this method.
    pub(crate) fn demo_key(self) -> &'static str {
        match self {
            Method::Mb => IFTHENPAY_MB_KEY,
            Method::MbWay => IFTHENPAY_MBWAY_KEY,
            Method::Payshop => IFTHENPAY_PAYSHOP_KEY,
            Method::Ccard => IFTHENPAY_CCARD_KEY,
            Method::Pinpay => IFTHENPAY_GATEWAY_KEY,
            Method::Cofidis => IFTHENPAY_COFIDIS_KEY,
            Method::Pix => IFTHENPAY_PIX_KEY,
            Method::Google => IFTHENPAY_GOOGLE_KEY,
            Method::Apple => IFTHENPAY_APPLE_KEY,
        }
    }

    /// The method a demo key belongs to.
    pub(crate) fn of_key(key: &str) -> Option<Method> {
        [
            Method::Mb,
            Method::MbWay,
            Method::Payshop,
            Method::Ccard,
            Method::Pinpay,
            Method::Cofidis,
            Method::Pix,
            Method::Google,
            Method::Apple,
        ]
        .into_iter()
        .find(|m| m.demo_key() == key)
    }
}

/// The ifthenpay emulator's shared state.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub pool: SqlitePool,
    /// Calls merchants back.
    pub http: reqwest::Client,
}

impl State {
    pub(crate) fn new(pool: SqlitePool) -> State {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        State { pool, http }
    }
}

/// The ifthenpay routes (they share the emulator's port with OPP's `/v1/...`; no path clashes).
pub(crate) fn router(state: State) -> Router {
    Router::new()
        .route("/multibanco/reference/init", post(api::multibanco_init))
        .route("/spg/payment/mbway", post(api::mbway_init))
        .route("/spg/payment/mbway/status", get(api::mbway_status))
        // Payshop and callback activation live on another host, under `/api`: every official
        // client posts to `https://ifthenpay.com/api/payshop/reference/` and
        // `https://ifthenpay.com/api/endpoint/callback/activation` (ifthenpay-sdk-php
        // src/Config.php; webdados/Multibanco-ifthenpay-Gateway-for-WooCommerce). The emulator
        // serves them at the same paths and not under the API host's root, so a client that
        // posts them to the wrong place fails here as it would at ifthenpay.
        .route("/api/payshop/reference/", post(api::payshop_init))
        .route("/api/payshop/reference", post(api::payshop_init))
        .route("/creditcard/init/{key}", post(api::ccard_init))
        .route("/gateway/pinpay/{key}", post(api::pinpay_init))
        .route("/cofidis/init/{key}", post(api::cofidis_init))
        .route("/pix/init/{key}", post(api::pix_init))
        .route("/v2/payments/read", post(api::payments_read))
        .route(
            "/api/endpoint/callback/activation",
            post(api::callback_activation),
        )
        .route(
            "/api/endpoint/callback/activation/",
            post(api::callback_activation),
        )
        .route("/sandbox/ifthenpay/shopper", post(shopper::act))
        .route(
            "/sandbox/ifthenpay/checkout/{token}",
            get(shopper::checkout),
        )
        .route("/sandbox/ifthenpay/pinpay/{pin}", get(shopper::pinpay_page))
        .with_state(state)
        .layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async move {
                response
                    .headers_mut()
                    .insert("x-paywarden-sandbox", HeaderValue::from_static("true"));
                response
            },
        ))
}
