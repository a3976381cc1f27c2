//! The ifthenpay connector: a real HTTP client of ifthenpay's public payment API (Portugal's
//! Multibanco, MB WAY, Payshop, cards, PinPay / Pay-by-Link, Cofidis Pay, and Brazil's PIX).
//!
//! | operation | request | success |
//! |---|---|---|
//! | Multibanco reference | `POST /multibanco/reference/init` (`mbKey`, `orderId`, `amount`, `expiryDays`) | `Status` `"0"` |
//! | MB WAY request | `POST /spg/payment/mbway` (`mbWayKey`, `orderId`, `amount`, `mobileNumber`, `description`) | `Status` `"000"` |
//! | MB WAY status | `GET /spg/payment/mbway/status?mbWayKey=&requestId=` | `000` paid, `020` rejected, `101` expired, `122` declined, `123` pending |
//! | Payshop reference | `POST {payshop}/payshop/reference/` (`payshopkey`, `id`, `valor`, `validade`) | `Code` `"0"` |
//! | card checkout | `POST /creditcard/init/{CCARD_KEY}` (`orderId`, `amount`, `successUrl`, `errorUrl`, `cancelUrl`, `language`) | `Status` `"0"` |
//! | PinPay link | `POST /gateway/pinpay/{GATEWAY_KEY}` (`id`, `amount`, `accounts`, `selected_method`, `otp`, `expiredate`, ...) | `RedirectUrl` present |
//! | Cofidis Pay | `POST /cofidis/init/{COFIDIS_KEY}` (`orderId`, `amount`, `returnUrl`, `customer*`) | `status` `"0"` |
//! | PIX | `POST /pix/init/{PIX_KEY}` (`orderId`, `amount`, `redirectUrl`, `customer*`) | `status` `"0"` |
//! | payments list | `POST /v2/payments/read` (`boKey`, `entity`, `subEntity`, `orderId`, `reference`, `requestId`, `amount`, `dateStart`, `dateEnd`) | `status` `200` |
//! | callback activation | `POST {callback}/endpoint/callback/activation` (`chave`, `entidade`, `subentidade`, `apKey`, `urlCb`) | body starting `OK` |
//!
//! Base URLs are per endpoint. Everything but Payshop and callback activation is at the API
//! host (`https://api.ifthenpay.com` live; in the offline default, the emulator's loopback
//! address). Payshop and callback activation are at `https://ifthenpay.com/api`: every
//! official client posts there (ifthenpay-sdk-php src/Config.php `payshop_init`,
//! `register_webhook`; the WooCommerce plugin's `webservice_url` and `callback_webservice`).
//! Their base defaults to that host when the API base is the live one, and to
//! `{API base}/api` otherwise (the emulator's layout); both can be set. Amounts travel as decimal strings (`"25.00"`) made
//! from integer minor units. Keys travel in bodies, queries and paths as ifthenpay requires; they
//! are [`SecretString`]s here and never appear in an error: transport errors are reported
//! without their URL.

mod transformers;

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use paywarden_domain::{Currency, Money};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use transformers::{
    loose_text, parse_amount, parse_expiry, parse_wire_time, InitStatus, MbwayInitCode,
    MbwayStatusCode, WireCard, WireCheckout, WireMbwayInit, WireMbwayStatus, WireMultibanco,
    WirePayments, WirePayshop, WirePinpay, WIRE_TIME,
};

/// The live API's base URL.
pub const LIVE_BASE_URL: &str = "https://api.ifthenpay.com";

/// The live base URL of Payshop references and callback activation (another host than
/// [`LIVE_BASE_URL`]; ifthenpay-sdk-php src/Config.php).
pub const LIVE_LEGACY_BASE_URL: &str = "https://ifthenpay.com/api";

/// The base URL of Payshop and callback activation that goes with API base `base_url`:
/// [`LIVE_LEGACY_BASE_URL`] for the live API, else `{base_url}/api`.
pub fn legacy_base_for(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base.eq_ignore_ascii_case(LIVE_BASE_URL) {
        LIVE_LEGACY_BASE_URL.to_string()
    } else {
        format!("{base}/api")
    }
}

/// Errors of the ifthenpay connector.
#[derive(Debug, thiserror::Error)]
pub enum IfthenpayError {
    /// ifthenpay refused the request (an invalid key, invalid parameters); `code` is its status
    /// code (`-1`, `999`, `100`, `403`, HTTP 400 ...) and `message` its text.
    #[error("{message}")]
    Rejected {
        /// ifthenpay's status code.
        code: String,
        /// ifthenpay's message.
        message: String,
    },
    /// ifthenpay did not answer within the timeout; a creation's outcome is unknown.
    #[error("ifthenpay did not answer within {0:?}; the outcome is unknown")]
    Timeout(Duration),
    /// ifthenpay could not be reached (connection refused, DNS, TLS); nothing was created.
    #[error("ifthenpay could not be reached at {base_url}: {reason}")]
    Unreachable {
        /// The configured base URL.
        base_url: String,
        /// What failed (without the request URL, which may carry a key).
        reason: String,
    },
    /// ifthenpay answered with something that is not its documented JSON.
    #[error("ifthenpay answered HTTP {status} with a body paywarden cannot read: {reason}")]
    UnexpectedResponse {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        reason: String,
    },
}

/// A created Multibanco reference.
#[derive(Debug, Clone, PartialEq)]
pub struct MultibancoReference {
    /// The 5-digit entity.
    pub entity: String,
    /// The 9-digit reference.
    pub reference: String,
    /// The amount to pay.
    pub amount: Money,
    /// Last day to pay, when the reference expires.
    pub expiry_date: Option<NaiveDate>,
    /// ifthenpay's `RequestId`.
    pub request_id: String,
}

/// A created Payshop reference.
#[derive(Debug, Clone, PartialEq)]
pub struct PayshopReference {
    /// The 13-digit reference.
    pub reference: String,
    /// ifthenpay's `RequestId`.
    pub request_id: String,
}

/// A hosted checkout (card, Cofidis Pay, PIX).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkout {
    /// Where the shopper pays.
    pub payment_url: String,
    /// ifthenpay's request id.
    pub request_id: String,
    /// PIX only: the "copia e cola" QR value.
    pub qr_code_value: Option<String>,
}

/// A PinPay / Pay-by-Link link.
#[derive(Debug, Clone, PartialEq)]
pub struct PinpayLink {
    /// The payment page (`RedirectUrl`).
    pub redirect_url: String,
    /// The pinpay.pt page (`PinpayUrl`), when given.
    pub pinpay_url: Option<String>,
    /// The PIN for that page (`PinCode`), when given.
    pub pin_code: Option<String>,
}

/// Where an MB WAY request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbwayState {
    /// `000`.
    Paid,
    /// `020`: the shopper rejected it.
    Rejected,
    /// `101`: not approved within 4 minutes.
    Expired,
    /// `122`: declined / cancelled.
    Declined,
    /// Awaiting the shopper.
    Pending,
    /// A code ifthenpay has not documented.
    Unknown,
}

impl MbwayState {
    /// The seed's name: `paid`, `rejected`, `expired`, `declined`, `pending`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            MbwayState::Paid => "paid",
            MbwayState::Rejected => "rejected",
            MbwayState::Expired => "expired",
            MbwayState::Declined => "declined",
            MbwayState::Pending => "pending",
            MbwayState::Unknown => "unknown",
        }
    }
}

/// An MB WAY status answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MbwayStatus {
    /// Where it stands.
    pub state: MbwayState,
    /// ifthenpay's raw `Status` code.
    pub code: String,
    /// ifthenpay's `Message`.
    pub message: String,
    /// `CreatedAt` (ifthenpay's local time as sent).
    pub created_at: Option<NaiveDateTime>,
    /// `UpdateAt`.
    pub updated_at: Option<NaiveDateTime>,
}

/// A completed payment from the v2 payments list.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRecord {
    /// `orderId`.
    pub order_id: String,
    /// `amount` (EUR; BRL for PIX).
    pub amount: Money,
    /// `entity`: the method (`MB`, `MBWAY`, `CCARD`, ...) or the 5-digit Multibanco entity.
    pub entity: String,
    /// `reference` (the order id for methods without references).
    pub reference: Option<String>,
    /// `requestId`.
    pub request_id: Option<String>,
    /// `paymentDate`.
    pub payment_date: Option<NaiveDateTime>,
}

/// Filters of the payments list (`POST /v2/payments/read`); `None` sends nothing.
#[derive(Debug, Clone, Default)]
pub struct PaymentsQuery {
    /// `entity`: method code or 5-digit entity.
    pub entity: Option<String>,
    /// `subEntity`: a method key or sub-entity (a secret when a key).
    pub sub_entity: Option<SecretString>,
    /// `orderId`.
    pub order_id: Option<String>,
    /// `reference`.
    pub reference: Option<String>,
    /// `requestId`.
    pub request_id: Option<String>,
    /// `amount`, exact.
    pub amount: Option<Money>,
    /// `dateStart`.
    pub date_start: Option<NaiveDateTime>,
    /// `dateEnd`.
    pub date_end: Option<NaiveDateTime>,
}

/// A real HTTP client of ifthenpay's API.
#[derive(Debug, Clone)]
pub struct IfthenpayClient {
    http: reqwest::Client,
    base_url: String,
    payshop_base_url: String,
    callback_base_url: String,
    timeout: Duration,
}

impl IfthenpayClient {
    /// A client of the API at `base_url` (no trailing slash needed) with a per-request timeout.
    ///
    /// # Errors
    /// [`IfthenpayError::Unreachable`] when the HTTP client cannot be built.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, IfthenpayError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| IfthenpayError::Unreachable {
                base_url: base_url.to_string(),
                reason: e.without_url().to_string(),
            })?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            payshop_base_url: legacy_base_for(base_url),
            callback_base_url: legacy_base_for(base_url),
            timeout,
        })
    }

    /// The same client with other base URLs for Payshop (`POST {payshop}/payshop/reference/`)
    /// and callback activation (`POST {callback}/endpoint/callback/activation`); `None` keeps
    /// the default of [`legacy_base_for`].
    pub fn with_endpoints(mut self, payshop: Option<&str>, callback: Option<&str>) -> Self {
        if let Some(p) = payshop {
            self.payshop_base_url = p.trim_end_matches('/').to_string();
        }
        if let Some(c) = callback {
            self.callback_base_url = c.trim_end_matches('/').to_string();
        }
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL Payshop references are created at.
    pub fn payshop_url(&self) -> String {
        format!("{}/payshop/reference/", self.payshop_base_url)
    }

    /// The URL callbacks are activated at.
    pub fn callback_activation_url(&self) -> String {
        format!("{}/endpoint/callback/activation", self.callback_base_url)
    }

    fn transport(&self, e: reqwest::Error) -> IfthenpayError {
        if e.is_timeout() {
            IfthenpayError::Timeout(self.timeout)
        } else {
            IfthenpayError::Unreachable {
                base_url: self.base_url.clone(),
                reason: e.without_url().to_string(),
            }
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, String), IfthenpayError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| self.transport(e))?;
        Ok((status, body))
    }

    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, IfthenpayError> {
        self.post_json_to(format!("{}{path}", self.base_url), body)
            .await
    }

    async fn post_json_to<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
        body: &Value,
    ) -> Result<T, IfthenpayError> {
        let (status, text) = self.send(self.http.post(url).json(body)).await?;
        decode(status, &text)
    }

    /// Creates a Multibanco reference.
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] with ifthenpay's `Status` and `Message` (invalid key ...);
    /// transport errors.
    pub async fn multibanco_init(
        &self,
        key: &SecretString,
        order_id: &str,
        amount: Money,
        expiry_days: Option<u32>,
    ) -> Result<MultibancoReference, IfthenpayError> {
        let mut body = json!({
            "mbKey": key.expose_secret(),
            "orderId": order_id,
            "amount": amount.to_decimal_string(),
        });
        if let Some(days) = expiry_days {
            body["expiryDays"] = json!(days);
        }
        let wire: WireMultibanco = self.post_json("/multibanco/reference/init", &body).await?;
        InitStatus::parse(&loose_text(&wire.status).unwrap_or_default())
            .into_result(&wire.message)?;
        Ok(MultibancoReference {
            entity: loose_text(&wire.entity).ok_or_else(|| missing("Entity"))?,
            reference: loose_text(&wire.reference).ok_or_else(|| missing("Reference"))?,
            amount: parse_amount(&wire.amount, amount.currency()).unwrap_or(amount),
            expiry_date: parse_expiry(wire.expiry_date.as_deref()),
            request_id: wire.request_id.ok_or_else(|| missing("RequestId"))?,
        })
    }

    /// Sends an MB WAY payment request to the shopper's phone (`mobile_number` as
    /// `351#912345678`). Returns ifthenpay's `RequestId`.
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] for codes other than `000`; transport errors.
    pub async fn mbway_init(
        &self,
        key: &SecretString,
        order_id: &str,
        amount: Money,
        mobile_number: &str,
        description: Option<&str>,
    ) -> Result<String, IfthenpayError> {
        let mut body = json!({
            "mbWayKey": key.expose_secret(),
            "orderId": order_id,
            "amount": amount.to_decimal_string(),
            "mobileNumber": mobile_number,
        });
        if let Some(d) = description {
            body["description"] = json!(d);
        }
        let wire: WireMbwayInit = self.post_json("/spg/payment/mbway", &body).await?;
        let code = loose_text(&wire.status).unwrap_or_default();
        match MbwayInitCode::parse(&code) {
            MbwayInitCode::Sent => wire.request_id.ok_or_else(|| missing("RequestId")),
            MbwayInitCode::Failed
            | MbwayInitCode::Declined
            | MbwayInitCode::Error
            | MbwayInitCode::Other(_) => Err(IfthenpayError::Rejected {
                code,
                message: wire.message,
            }),
        }
    }

    /// Reads an MB WAY request's status.
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] for `999` (invalid key, unknown request); transport errors.
    pub async fn mbway_status(
        &self,
        key: &SecretString,
        request_id: &str,
    ) -> Result<MbwayStatus, IfthenpayError> {
        let request = self
            .http
            .get(format!("{}/spg/payment/mbway/status", self.base_url))
            .query(&[("mbWayKey", key.expose_secret()), ("requestId", request_id)]);
        let (status, text) = self.send(request).await?;
        let wire: WireMbwayStatus = decode(status, &text)?;
        let code = loose_text(&wire.status).unwrap_or_default();
        let Some(state) = MbwayStatusCode::parse(&code).state() else {
            return Err(IfthenpayError::Rejected {
                code,
                message: wire.message,
            });
        };
        Ok(MbwayStatus {
            state,
            code,
            message: wire.message,
            created_at: parse_wire_time(wire.created_at.as_deref()),
            updated_at: parse_wire_time(wire.update_at.as_deref()),
        })
    }

    /// Creates a Payshop reference (`validade` from `expiry`).
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] with `Code` and `Message`; transport errors.
    pub async fn payshop_init(
        &self,
        key: &SecretString,
        order_id: &str,
        amount: Money,
        expiry: Option<NaiveDate>,
    ) -> Result<PayshopReference, IfthenpayError> {
        let mut body = json!({
            "payshopkey": key.expose_secret(),
            "id": order_id,
            "valor": amount.to_decimal_string(),
        });
        if let Some(d) = expiry {
            body["validade"] = json!(d.format("%Y%m%d").to_string());
        }
        let wire: WirePayshop = self.post_json_to(self.payshop_url(), &body).await?;
        InitStatus::parse(&loose_text(&wire.code).unwrap_or_default())
            .into_result(&wire.message)?;
        Ok(PayshopReference {
            reference: loose_text(&wire.reference).ok_or_else(|| missing("Reference"))?,
            request_id: wire.request_id.ok_or_else(|| missing("RequestId"))?,
        })
    }

    /// Creates a hosted card checkout. `body` holds ifthenpay's fields besides the key
    /// (`orderId`, `amount`, `successUrl`, `errorUrl`, `cancelUrl`, `language`).
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] with `Status` and `Message`; transport errors.
    pub async fn creditcard_init(
        &self,
        key: &SecretString,
        body: &Value,
    ) -> Result<Checkout, IfthenpayError> {
        let wire: WireCard = self
            .post_json(&format!("/creditcard/init/{}", key.expose_secret()), body)
            .await?;
        InitStatus::parse(&loose_text(&wire.status).unwrap_or_default())
            .into_result(&wire.message)?;
        Ok(Checkout {
            payment_url: wire.payment_url.ok_or_else(|| missing("PaymentUrl"))?,
            request_id: wire.request_id.ok_or_else(|| missing("RequestId"))?,
            qr_code_value: None,
        })
    }

    /// Creates a Cofidis Pay checkout (`orderId`, `amount`, `returnUrl`, `customer*` in `body`).
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] with `status` and `message`; transport errors.
    pub async fn cofidis_init(
        &self,
        key: &SecretString,
        body: &Value,
    ) -> Result<Checkout, IfthenpayError> {
        let path = format!("/cofidis/init/{}", key.expose_secret());
        self.camel_checkout(&path, body).await
    }

    /// Creates a PIX checkout (`orderId`, `amount`, `redirectUrl`, `customer*` in `body`).
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] with `status` and `message`; transport errors.
    pub async fn pix_init(
        &self,
        key: &SecretString,
        body: &Value,
    ) -> Result<Checkout, IfthenpayError> {
        let path = format!("/pix/init/{}", key.expose_secret());
        self.camel_checkout(&path, body).await
    }

    async fn camel_checkout(&self, path: &str, body: &Value) -> Result<Checkout, IfthenpayError> {
        let wire: WireCheckout = self.post_json(path, body).await?;
        InitStatus::parse(&loose_text(&wire.status).unwrap_or_default())
            .into_result(&wire.message)?;
        Ok(Checkout {
            payment_url: wire.payment_url.ok_or_else(|| missing("paymentUrl"))?,
            request_id: wire.request_id.ok_or_else(|| missing("requestId"))?,
            qr_code_value: wire.qr_code_value.filter(|q| !q.is_empty()),
        })
    }

    /// Creates a PinPay link (`id`, `amount`, `accounts`, `selected_method`, ... in `body`).
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] when ifthenpay answers an error or no `RedirectUrl`.
    pub async fn pinpay_init(
        &self,
        key: &SecretString,
        body: &Value,
    ) -> Result<PinpayLink, IfthenpayError> {
        let request = self
            .http
            .post(format!(
                "{}/gateway/pinpay/{}",
                self.base_url,
                key.expose_secret()
            ))
            .json(body);
        let (status, text) = self.send(request).await?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    v.get("error")
                        .or_else(|| v.get("Message"))
                        .or_else(|| v.get("message"))
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(IfthenpayError::Rejected {
                code: status.to_string(),
                message,
            });
        }
        let wire: WirePinpay = decode(status, &text)?;
        Ok(PinpayLink {
            redirect_url: wire.redirect_url.filter(|u| !u.is_empty()).ok_or_else(|| {
                IfthenpayError::Rejected {
                    code: status.to_string(),
                    message: "ifthenpay returned no RedirectUrl".into(),
                }
            })?,
            pinpay_url: wire.pinpay_url.filter(|u| !u.is_empty()),
            pin_code: loose_text(&wire.pin_code),
        })
    }

    /// Reads completed payments with the backoffice key (`POST /v2/payments/read`).
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] for `status` other than 200 (e.g. 403 `Invalid boKey`).
    pub async fn payments_read(
        &self,
        bo_key: &SecretString,
        query: &PaymentsQuery,
    ) -> Result<Vec<PaymentRecord>, IfthenpayError> {
        let mut body = json!({ "boKey": bo_key.expose_secret() });
        let mut set = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                body[name] = json!(v);
            }
        };
        set("entity", query.entity.clone());
        set(
            "subEntity",
            query
                .sub_entity
                .as_ref()
                .map(|s| s.expose_secret().to_string()),
        );
        set("orderId", query.order_id.clone());
        set("reference", query.reference.clone());
        set("requestId", query.request_id.clone());
        set("amount", query.amount.map(|a| a.to_decimal_string()));
        set(
            "dateStart",
            query.date_start.map(|d| d.format(WIRE_TIME).to_string()),
        );
        set(
            "dateEnd",
            query.date_end.map(|d| d.format(WIRE_TIME).to_string()),
        );
        let wire: WirePayments = self.post_json("/v2/payments/read", &body).await?;
        let status = loose_text(&wire.status).unwrap_or_default();
        if status != "200" {
            return Err(IfthenpayError::Rejected {
                code: status,
                message: wire.message,
            });
        }
        Ok(wire
            .payments
            .into_iter()
            .filter_map(|p| {
                let entity = loose_text(&p.entity).unwrap_or_default();
                let currency = if entity.eq_ignore_ascii_case("PIX") {
                    Currency::BRL
                } else {
                    Currency::EUR
                };
                Some(PaymentRecord {
                    order_id: loose_text(&p.order_id).unwrap_or_default(),
                    amount: parse_amount(&p.amount, currency)?,
                    entity,
                    reference: loose_text(&p.reference),
                    request_id: p.request_id.filter(|r| !r.is_empty()),
                    payment_date: parse_wire_time(p.payment_date.as_deref()),
                })
            })
            .collect())
    }

    /// Registers the callback URL (with ifthenpay's placeholders) and the anti-phishing key for
    /// one method key (`POST /endpoint/callback/activation`).
    ///
    /// # Errors
    /// [`IfthenpayError::Rejected`] when ifthenpay does not answer `OK`.
    pub async fn activate_callback(
        &self,
        bo_key: &SecretString,
        entity: &str,
        key: &SecretString,
        anti_phishing_key: &SecretString,
        url: &str,
    ) -> Result<(), IfthenpayError> {
        let body = json!({
            "chave": bo_key.expose_secret(),
            "entidade": entity,
            "subentidade": key.expose_secret(),
            "apKey": anti_phishing_key.expose_secret(),
            "urlCb": url,
        });
        let (status, text) = self
            .send(self.http.post(self.callback_activation_url()).json(&body))
            .await?;
        // ifthenpay answers `OK` followed by text (ifthenpay-sdk-php WebhookService checks the
        // answer starts with `OK:`).
        if status == 200 && text.trim().trim_matches('"').starts_with("OK") {
            Ok(())
        } else {
            Err(IfthenpayError::Rejected {
                code: status.to_string(),
                message: text.chars().take(200).collect(),
            })
        }
    }
}

fn missing(field: &str) -> IfthenpayError {
    IfthenpayError::UnexpectedResponse {
        status: 200,
        reason: format!("success without {field}"),
    }
}

fn decode<T: serde::de::DeserializeOwned>(status: u16, text: &str) -> Result<T, IfthenpayError> {
    serde_json::from_str(text).map_err(|e| IfthenpayError::UnexpectedResponse {
        status,
        reason: e.to_string(),
    })
}
