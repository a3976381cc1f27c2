//! ifthenpay's payment callback and the matching of backoffice records.

use super::*;

impl IfthenpayService {
    /// Handles a callback ifthenpay sent (the query of `GET /ifthenpay/callback`): checks the
    /// anti-phishing key (constant time) and the amount against the request paywarden created,
    /// records the payment, and records every callback, refused ones too. Returns the HTTP
    /// status and body to answer (200 `OK`; 403 wrong key; 404 unknown payment; 409 amount
    /// mismatch; 400 unreadable amount). The key itself is never stored or logged.
    ///
    /// # Errors
    /// [`ServiceError::Store`].
    pub async fn callback(
        &self,
        query: &HashMap<String, String>,
    ) -> Result<(u16, &'static str), ServiceError> {
        use subtle::ConstantTimeEq;
        let get = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| query.get(*n))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let order_id = get(&["orderId", "order_id", "id"]);
        let request_id = get(&["requestId", "request_id"]);
        let reference = get(&["reference"]);
        let amount_text = get(&["amount", "valor"]);
        let payment_method = get(&["payment_method", "paymentMethod"]);
        let sent_key = get(&["key", "anti_phishing_key", "apk"]).unwrap_or_default();
        let mb_entity = get(&["entity"]);
        let found = self
            .pipeline
            .store()
            .find_ifthenpay_request(
                request_id.as_deref(),
                reference.as_deref(),
                mb_entity.as_deref(),
                order_id.as_deref(),
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
            match (&found, parsed) {
                (None, _) => (false, Some("unknown_payment"), 404, "unknown payment"),
                (Some(_), None) => (false, Some("bad_amount"), 400, "unreadable amount"),
                (Some(r), Some(m)) if m.minor_units() != r.amount_minor => {
                    (false, Some("amount_mismatch"), 409, "amount does not match")
                }
                (Some(_), Some(_)) => (true, None, 200, "OK"),
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
            received_at: String::new(),
        };
        self.pipeline
            .store()
            .record_ifthenpay_callback(&record)
            .await?;
        if accepted {
            if let Some(r) = &found {
                self.pipeline.store().mark_ifthenpay_paid(r.id).await?;
            }
        }
        // The audit log sees every callback, without the key.
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
        });
        let message = if accepted {
            "payment recorded".to_string()
        } else {
            format!("callback refused: {}", reason.unwrap_or_default())
        };
        let audited = ToolOutcome {
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

    /// Registers paywarden's callback URL (`{base}/ifthenpay/callback?key=[ANTI_PHISHING_KEY]&...`)
    /// with the emulator for every demo key, with the demo backoffice key. Sandbox only: against
    /// the live API the operator activates the callback in ifthenpay's backoffice.
    pub async fn activate_demo_callbacks(&self, base: &str) {
        let (Some(client), true, Some(ap_key)) =
            (&self.client, self.sandbox, &self.anti_phishing_key)
        else {
            return;
        };
        let url = callback_template(base);
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

/// paywarden's callback URL with ifthenpay's placeholders, as registered at ifthenpay.
pub fn callback_template(base: &str) -> String {
    format!(
        "{}/ifthenpay/callback?key=[ANTI_PHISHING_KEY]&orderId=[ORDER_ID]&amount=[AMOUNT]&requestId=[REQUEST_ID]&entity=[ENTITY]&reference=[REFERENCE]&payment_datetime=[PAYMENT_DATETIME]&payment_method=[PAYMENT_METHOD]",
        base.trim_end_matches('/')
    )
}
