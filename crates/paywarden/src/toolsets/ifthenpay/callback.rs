//! ifthenpay's payment callback and the matching of backoffice records.

use super::*;

impl IfthenpayService {
    /// Handles a callback ifthenpay sent (the query of `GET /ifthenpay/callback`): checks the
    /// anti-phishing key (constant time), the status (`PAGO` or none: a payment; `DEVOLVIDO`: a
    /// refund, booked against a paid request) and the amount against the request paywarden
    /// created, records the payment or refund, and records every callback that carries the
    /// right key, refused ones too; of those with a wrong key, one per minute is recorded and
    /// audited and the rest counted ([`refused`]).
    /// Returns the HTTP status and body to answer (200 `OK`; 403 wrong key; 404 unknown
    /// payment; 409 amount mismatch, or a refund of an unpaid request or above what is left;
    /// 400 unreadable amount or unknown status). The key itself is never stored or logged.
    ///
    /// # Errors
    /// [`ServiceError::Store`].
    pub async fn callback(
        &self,
        query: &HashMap<String, String>,
    ) -> Result<(u16, &'static str), ServiceError> {
        use subtle::ConstantTimeEq;
        // A value still in brackets is a placeholder ifthenpay did not fill: it fills only the
        // ones the method documents (see `callback_template`), so it counts as not sent.
        let get = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| query.get(*n))
                .map(|v| v.trim().to_string())
                .find(|v| !v.is_empty() && !is_placeholder(v))
        };
        let order_id = get(&["orderId", "order_id", "id"]);
        let request_id = get(&["requestId", "request_id"]);
        let reference = get(&["reference"]);
        let amount_text = get(&["amount", "valor"]);
        let payment_method = get(&["payment_method", "paymentMethod"]);
        let sent_key = get(&["key", "anti_phishing_key", "apk"]).unwrap_or_default();
        let mb_entity = get(&["entity"]);
        let method = get(&["pm"]);
        // `[STATUS]` of card and PinPay callbacks: `PAGO` paid, `DEVOLVIDO` refunded (the
        // WooCommerce plugin accepts exactly these two; webdados/Multibanco-ifthenpay-Gateway-
        // for-WooCommerce class-wc-creditcard-ifthen-webdados.php). Methods without a status
        // only call back for payments.
        let status_text = get(&["status", "estado"]);
        let kind = match status_text
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("PAGO") => Some("payment"),
            Some("DEVOLVIDO") => Some("refund"),
            Some(_) => None,
        };
        let found = self
            .pipeline
            .store()
            .find_ifthenpay_request(
                request_id.as_deref(),
                reference.as_deref(),
                mb_entity.as_deref(),
                order_id.as_deref(),
                method.as_deref(),
            )
            .await?;
        // The anti-phishing key of the account the request was made with: the entity's own,
        // else the global one.
        let expected = found
            .as_ref()
            .and_then(|r| self.entity_anti_phishing_keys.get(&r.entity_id))
            .or(self.anti_phishing_key.as_ref());
        let key_ok = expected
            .is_some_and(|k| bool::from(k.expose_secret().as_bytes().ct_eq(sent_key.as_bytes())));
        let currency = found
            .as_ref()
            .and_then(|r| Currency::from_code(&r.currency).ok())
            .unwrap_or(Currency::EUR);
        let parsed = amount_text
            .as_deref()
            .and_then(|a| Money::parse(&a.replace(',', "."), currency).ok());
        let (accepted, reason, status, body) = if !key_ok {
            (
                false,
                Some("wrong_anti_phishing_key"),
                403,
                "invalid anti-phishing key",
            )
        } else {
            match (kind, &found, parsed) {
                (None, _, _) => (false, Some("unknown_status"), 400, "unknown status"),
                (_, None, _) => (false, Some("unknown_payment"), 404, "unknown payment"),
                (_, Some(_), None) => (false, Some("bad_amount"), 400, "unreadable amount"),
                (Some("refund"), Some(r), Some(m)) => {
                    // A refund is never a payment: booked against a paid request, within
                    // what is left to refund, in one statement.
                    if self
                        .pipeline
                        .store()
                        .refund_ifthenpay_request(r.id, m.minor_units())
                        .await?
                    {
                        (true, None, 200, "OK")
                    } else {
                        (
                            false,
                            Some("refund_not_bookable"),
                            409,
                            "refund of an unpaid payment or above what is left to refund",
                        )
                    }
                }
                (_, Some(r), Some(m)) if m.minor_units() != r.amount_minor => {
                    (false, Some("amount_mismatch"), 409, "amount does not match")
                }
                (_, Some(_), Some(_)) => (true, None, 200, "OK"),
            }
        };
        let kind = kind.unwrap_or("unknown");
        // Without the right key, anyone can call: one such attempt per window is recorded and
        // audited, the others only counted (`refused`), so a flood cannot fill the audit log.
        let unrecorded_before = if key_ok {
            None
        } else {
            match self.refused_callbacks.admit(std::time::Instant::now()) {
                Some(n) => Some(n),
                None => return Ok((status, body)),
            }
        };
        let record = IfthenpayCallback {
            request_row: found.as_ref().map(|r| r.id),
            entity_id: found.as_ref().map(|r| r.entity_id.clone()),
            order_id: order_id.clone(),
            request_id: request_id.clone(),
            reference: reference.clone(),
            payment_method: payment_method.clone(),
            amount_text: amount_text.clone(),
            amount_minor: parsed.map(|m| m.minor_units()),
            accepted,
            reason: reason.map(String::from),
            kind: kind.to_string(),
            received_at: String::new(),
        };
        self.pipeline
            .store()
            .record_ifthenpay_callback(&record)
            .await?;
        if accepted && kind == "payment" {
            if let Some(r) = &found {
                self.pipeline.store().mark_ifthenpay_paid(r.id).await?;
            }
        }
        // The audit log sees every callback with the right key (and one per window without),
        // never the key.
        let caller = Caller {
            entity_id: found
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |r| r.entity_id.clone()),
            token: SecretString::from(String::new()),
            client_name: Some("ifthenpay callback".into()),
        };
        let facts = AuditFacts {
            outcome: if accepted {
                "ok".into()
            } else {
                "rejected".into()
            },
            result_code: reason.map(String::from),
            provider_request_id: request_id.clone(),
            transaction_id: found.as_ref().and_then(|r| r.request_id.clone()),
            receipt: None,
        };
        let arguments = json!({
            "orderId": order_id, "requestId": request_id, "reference": reference,
            "amount": amount_text, "payment_method": payment_method, "anti_phishing_key_valid": key_ok,
            "status": status_text, "kind": kind,
        });
        let mut arguments = arguments;
        if let Some(n) = unrecorded_before {
            // Attempts with a wrong key the previous window counted without recording.
            arguments["unrecorded_refused_before"] = json!(n);
        }
        let message = if accepted && kind == "refund" {
            "refund recorded".to_string()
        } else if accepted {
            "payment recorded".to_string()
        } else {
            format!("callback refused: {}", reason.unwrap_or_default())
        };
        let audited = ToolOutcome {
            structured_json: None,
            structured: json!({}),
            is_error: !accepted,
            text: message,
            audit: facts,
        };
        self.pipeline
            .read(&caller, TOOLSET, "callback", &arguments, || async {
                Ok(audited)
            })
            .await?;
        Ok((status, body))
    }

    /// Registers paywarden's callback URL for each method ([`callback_template`])
    /// with the emulator for every demo key, with the demo backoffice key. Sandbox only: against
    /// the live API the operator activates the callback in ifthenpay's backoffice.
    pub async fn activate_demo_callbacks(&self, base: &str) {
        let (Some(client), true, Some(ap_key)) =
            (&self.client, self.sandbox, &self.anti_phishing_key)
        else {
            return;
        };
        let bo = SecretString::from(paywarden_emulator::IFTHENPAY_BACKOFFICE_KEY.to_string());
        for (entity, key) in [
            ("MB", paywarden_emulator::IFTHENPAY_MB_KEY),
            ("MBWAY", paywarden_emulator::IFTHENPAY_MBWAY_KEY),
            ("PAYSHOP", paywarden_emulator::IFTHENPAY_PAYSHOP_KEY),
            ("CCARD", paywarden_emulator::IFTHENPAY_CCARD_KEY),
            ("PINPAY", paywarden_emulator::IFTHENPAY_GATEWAY_KEY),
            ("COFIDIS", paywarden_emulator::IFTHENPAY_COFIDIS_KEY),
            ("PIX", paywarden_emulator::IFTHENPAY_PIX_KEY),
        ] {
            let key = SecretString::from(key.to_string());
            let url = callback_template(base, entity);
            if url.chars().count() > CALLBACK_URL_MAX {
                tracing::warn!(
                    entity,
                    length = url.chars().count(),
                    "ifthenpay callback URL longer than the {CALLBACK_URL_MAX} characters ifthenpay accepts; not activated (use a shorter public address)"
                );
                continue;
            }
            if let Err(e) = client
                .activate_callback(&bo, entity, &key, ap_key, &url)
                .await
            {
                tracing::warn!(error = %e, entity, "ifthenpay callback activation failed");
            }
        }
    }
}

/// Whether payment record `r` from ifthenpay's backoffice is the payment of one of the `own`
/// requests: by request id when ifthenpay gives one, else by reference (with the Multibanco
/// entity). An order id alone is not enough: order ids are unique per entity only.
pub(super) fn owns(
    own: &[crate::store::IfthenpayRequest],
    r: &crate::connectors::ifthenpay::PaymentRecord,
) -> bool {
    match r.request_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => own.iter().any(|q| q.request_id.as_deref() == Some(id)),
        None => r
            .reference
            .as_deref()
            .filter(|x| !x.is_empty())
            .is_some_and(|reference| {
                own.iter().any(|q| {
                    q.reference.as_deref() == Some(reference)
                        && q.mb_entity.as_deref().is_none_or(|e| e == r.entity)
                })
            }),
    }
}

/// Whether a callback value is a placeholder ifthenpay left unfilled (`[ORDER_ID]`).
fn is_placeholder(value: &str) -> bool {
    value.starts_with('[') && value.ends_with(']')
}

/// The Multibanco `expiryDays` values above 31 that ifthenpay accepts (besides 0 to 31).
pub(super) const MULTIBANCO_EXPIRY_DAYS: [i64; 7] = [45, 60, 90, 120, 180, 365, 730];

/// The longest callback URL ifthenpay registers (ifthenpay-sdk-php registerWebhook: "length
/// must be equal or less than 300 characters").
pub const CALLBACK_URL_MAX: usize = 300;

/// paywarden's callback URL for the method `method` (`MB`, `MBWAY`, `PAYSHOP`, `CCARD`,
/// `PINPAY`, `COFIDIS`, `PIX`), with the placeholders ifthenpay fills for that method, as
/// registered at ifthenpay (one URL per method key). `pm` names the method, as ifthenpay's PHP
/// SDK does (ifthenpay-sdk-php src/Service/WebhookService.php `getWebhookParams`). Sources of
/// the placeholders:
/// - Multibanco: `orderId=[ORDER_ID]`, `requestId=[REQUEST_ID]`, `entity=[ENTITY]`,
///   `reference=[REFERENCE]`, `payment_datetime=[PAYMENT_DATETIME]`
///   (ifthenpay.com/docs/en/guides/callback, "Multibanco");
/// - MB WAY, Cofidis Pay, PIX: the guide's general example (`orderId`, `requestId`,
///   `payment_datetime`); Payshop adds `reference=[REFERENCE]` (SDK);
/// - card: `id=[ID]`, `status=[STATUS]`, `request_id=[REQUEST_ID]` (WooCommerce plugin
///   webdados/Multibanco-ifthenpay-Gateway-for-WooCommerce `creditcard_notify_url`);
/// - PinPay (gateway; Google Pay and Apple Pay are paid through it): as card, plus
///   `payment_method=[PAYMENT_METHOD]` (the plugin's `gateway_ifthen_notify_url`).
///
/// `[STATUS]` is `PAGO` (paid) or `DEVOLVIDO` (refunded): the handler books the latter as a
/// refund, never as a payment.
pub fn callback_template(base: &str, method: &str) -> String {
    let common = "key=[ANTI_PHISHING_KEY]&amount=[AMOUNT]&payment_datetime=[PAYMENT_DATETIME]";
    let specific = match method {
        "MB" => "orderId=[ORDER_ID]&requestId=[REQUEST_ID]&entity=[ENTITY]&reference=[REFERENCE]",
        "PAYSHOP" => "orderId=[ORDER_ID]&requestId=[REQUEST_ID]&reference=[REFERENCE]",
        "CCARD" => "id=[ID]&request_id=[REQUEST_ID]&status=[STATUS]",
        "PINPAY" => {
            "id=[ID]&request_id=[REQUEST_ID]&status=[STATUS]&payment_method=[PAYMENT_METHOD]"
        }
        _ => "orderId=[ORDER_ID]&requestId=[REQUEST_ID]",
    };
    format!(
        "{}/ifthenpay/callback?pm={method}&{common}&{specific}",
        base.trim_end_matches('/')
    )
}
