//! From a tool call's JSON arguments to a prepared, validated request (or a refusal).

use super::*;

impl IfthenpayService {
    /// Parses and validates; resolves the key.
    pub(super) fn prepare(
        &self,
        identity: &Identity,
        tool: &str,
        args: &Value,
    ) -> Result<Prepared, Refusal> {
        fn parse<T: serde::de::DeserializeOwned>(
            tool: &str,
            args: &Value,
        ) -> Result<T, ServiceError> {
            // The gate's two control arguments (a confirmation token, an approval id) are not
            // the seed's parameters: they are read by `create`, never by the typed request.
            let mut args = args.clone();
            if let Value::Object(map) = &mut args {
                map.remove("confirmation_token");
                map.remove("approval_id");
            }
            crate::mask::deserialize(args).map_err(|e| {
                invalid(format!(
                    "invalid arguments for {tool}: {e}; see the tool's inputSchema"
                ))
            })
        }
        let eur = Currency::EUR;
        match tool {
            "multibanco_create_reference" => {
                let p: MultibancoParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 25).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                // ifthenpay's accepted `expiryDays`: 0 to 31, 45, 60, 90, 120, 180, 365, 730
                // (helpdesk.ifthenpay.com article 79000128866, "API request Multibanco
                // references").
                let expiry_days = match p.expiry_days {
                    None => None,
                    Some(d) if MULTIBANCO_EXPIRY_DAYS.contains(&d) || (0..=31).contains(&d) => {
                        u32::try_from(d).ok()
                    }
                    Some(d) => {
                        return Err(bad(invalid(format!(
                            "expiry_days {d} must be 0 to 31, 45, 60, 90, 120, 180, 365 or 730 (omit it for no expiry)"
                        ))))
                    }
                };
                let key = self.resolve_key(identity, KeyKind::Mb, p.mb_key.as_deref())?;
                Ok(Prepared::Create(
                    key,
                    Creation::Multibanco {
                        order_id: p.order_id,
                        amount,
                        expiry_days,
                    },
                ))
            }
            "mbway_request_payment" => {
                let p: MbwayRequestParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 15).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                check_mbway_phone(&p.phone).map_err(bad)?;
                check_optional("description", p.description.as_deref(), 100).map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Mbway, p.mbway_key.as_deref())?;
                Ok(Prepared::Create(
                    key,
                    Creation::Mbway {
                        order_id: p.order_id,
                        amount,
                        phone: p.phone,
                        description: p.description,
                    },
                ))
            }
            "mbway_check_status" => {
                let p: MbwayStatusParams = parse(tool, args).map_err(bad)?;
                check_text("request_id", &p.request_id, 100).map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Mbway, p.mbway_key.as_deref())?;
                Ok(Prepared::MbwayStatus(key, p.request_id))
            }
            "payshop_create_reference" => {
                let p: PayshopParams = parse(tool, args).map_err(bad)?;
                // Payshop's `id`: at most 15 characters (issue 14's reading of ifthenpay's
                // Payshop documentation; ifthenpay's PHP SDK validates 25, and 15 passes both).
                check_text("order_id", &p.order_id, 15).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                let expiry = p
                    .expiry_date
                    .as_deref()
                    .map(|d| parse_yyyymmdd("expiry_date", d))
                    .transpose()
                    .map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Payshop, p.payshop_key.as_deref())?;
                Ok(Prepared::Create(
                    key,
                    Creation::Payshop {
                        order_id: p.order_id,
                        amount,
                        expiry,
                    },
                ))
            }
            "creditcard_create_payment" => {
                let p: CreditCardParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 15).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                check_url("success_url", &p.success_url).map_err(bad)?;
                check_url("error_url", &p.error_url).map_err(bad)?;
                check_url("cancel_url", &p.cancel_url).map_err(bad)?;
                check_choice("language", p.language.as_deref(), &["pt", "en"]).map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Ccard, p.ccard_key.as_deref())?;
                let body = json!({
                    "orderId": p.order_id,
                    "amount": amount.to_decimal_string(),
                    "successUrl": p.success_url,
                    "errorUrl": p.error_url,
                    "cancelUrl": p.cancel_url,
                    "language": p.language.unwrap_or_else(|| "pt".into()),
                });
                Ok(Prepared::Create(
                    key,
                    Creation::Card {
                        order_id: p.order_id,
                        amount,
                        body,
                    },
                ))
            }
            "pinpay_create_payment" => {
                let p: PinpayParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 15).map_err(bad)?;
                let covered = p
                    .accounts
                    .as_deref()
                    .map(check_accounts)
                    .transpose()
                    .map_err(bad)?;
                check_choice(
                    "selected_method",
                    p.selected_method.as_deref(),
                    &["1", "2", "3", "4", "7", "8"],
                )
                .map_err(bad)?;
                if let (Some(selected), Some(covered)) = (&p.selected_method, &covered) {
                    if !covered.contains(&selected.as_str()) {
                        return Err(bad(invalid(format!(
                            "selected_method {selected:?} has no matching entry in accounts (1=MB, 2=MBWAY, 3=PAYSHOP, 4=CCARD/GOOGLE/APPLE, 7=COFIDIS, 8=PIX)"
                        ))));
                    }
                }
                check_choice("otp", p.otp.as_deref(), &["true", "false"]).map_err(bad)?;
                check_choice("lang", p.lang.as_deref(), &["pt", "en", "es", "fr"]).map_err(bad)?;
                check_optional("description", p.description.as_deref(), 200).map_err(bad)?;
                check_optional("btn_close_label", p.btn_close_label.as_deref(), 50).map_err(bad)?;
                for (field, url) in [
                    ("success_url", &p.success_url),
                    ("error_url", &p.error_url),
                    ("cancel_url", &p.cancel_url),
                    ("btn_close_url", &p.btn_close_url),
                ] {
                    if let Some(u) = url {
                        check_url(field, u).map_err(bad)?;
                    }
                }
                let expiry = p
                    .expiry_date
                    .as_deref()
                    .map(|d| parse_yyyymmdd("expiry_date", d))
                    .transpose()
                    .map_err(bad)?;
                // PIX-only links are in BRL; every other method charges EUR.
                let pix_only = p.selected_method.as_deref() == Some("8")
                    || covered.as_deref() == Some(&["8"][..]);
                let currency = if pix_only { Currency::BRL } else { eur };
                let amount = parse_amount(&p.amount, currency).map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Gateway, p.gateway_key.as_deref())?;
                let mut body = json!({ "id": p.order_id, "amount": amount.to_decimal_string() });
                let optional = [
                    ("accounts", p.accounts),
                    ("selected_method", p.selected_method),
                    ("otp", p.otp),
                    ("expiredate", expiry.map(|d| d.format("%Y%m%d").to_string())),
                    ("description", p.description),
                    ("lang", p.lang),
                    ("success_url", p.success_url),
                    ("error_url", p.error_url),
                    ("cancel_url", p.cancel_url),
                    ("btnCloseUrl", p.btn_close_url),
                    ("btnCloseLabel", p.btn_close_label),
                ];
                set_present(&mut body, optional);
                Ok(Prepared::Create(
                    key,
                    Creation::Pinpay {
                        order_id: p.order_id,
                        amount,
                        body,
                    },
                ))
            }
            "cofidis_create_payment" => {
                let p: CofidisParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 15).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                check_url("return_url", &p.return_url).map_err(bad)?;
                check_optional("description", p.description.as_deref(), 200).map_err(bad)?;
                check_optional("customer_name", p.customer_name.as_deref(), 150).map_err(bad)?;
                if let Some(e) = &p.customer_email {
                    check_email("customer_email", e).map_err(bad)?;
                }
                if let Some(ph) = &p.customer_phone {
                    check_intl_phone("customer_phone", ph).map_err(bad)?;
                }
                let key = self.resolve_key(identity, KeyKind::Cofidis, p.cofidis_key.as_deref())?;
                let mut body = json!({
                    "orderId": p.order_id,
                    "amount": amount.to_decimal_string(),
                    "returnUrl": p.return_url,
                });
                set_present(
                    &mut body,
                    [
                        ("description", p.description),
                        ("customerName", p.customer_name),
                        ("customerEmail", p.customer_email),
                        ("customerPhone", p.customer_phone),
                    ],
                );
                Ok(Prepared::Create(
                    key,
                    Creation::Cofidis {
                        order_id: p.order_id,
                        amount,
                        body,
                    },
                ))
            }
            "pix_create_payment" => {
                let p: PixParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 25).map_err(bad)?;
                let amount = parse_amount(&p.amount, Currency::BRL).map_err(bad)?;
                check_url("redirect_url", &p.redirect_url).map_err(bad)?;
                check_text("customer_name", &p.customer_name, 150).map_err(bad)?;
                check_cpf(&p.customer_cpf).map_err(bad)?;
                check_email("customer_email", &p.customer_email).map_err(bad)?;
                check_intl_phone("customer_phone", &p.customer_phone).map_err(bad)?;
                check_optional("description", p.description.as_deref(), 200).map_err(bad)?;
                check_optional("customer_address", p.customer_address.as_deref(), 250)
                    .map_err(bad)?;
                check_optional("customer_city", p.customer_city.as_deref(), 50).map_err(bad)?;
                check_optional("customer_state", p.customer_state.as_deref(), 50).map_err(bad)?;
                check_optional("customer_zip_code", p.customer_zip_code.as_deref(), 20)
                    .map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Pix, p.pix_key.as_deref())?;
                let mut body = json!({
                    "orderId": p.order_id,
                    "amount": amount.to_decimal_string(),
                    "redirectUrl": p.redirect_url,
                    "customerName": p.customer_name,
                    "customerCpf": p.customer_cpf,
                    "customerEmail": p.customer_email,
                    "customerPhone": p.customer_phone,
                });
                set_present(
                    &mut body,
                    [
                        ("description", p.description),
                        ("customerAddress", p.customer_address),
                        ("customerCity", p.customer_city),
                        ("customerState", p.customer_state),
                        ("customerZipCode", p.customer_zip_code),
                    ],
                );
                Ok(Prepared::Create(
                    key,
                    Creation::Pix {
                        order_id: p.order_id,
                        amount,
                        body,
                    },
                ))
            }
            "payments_list" => {
                let p: PaymentsListParams = parse(tool, args).map_err(bad)?;
                let entity = match p.entity {
                    None => None,
                    Some(e) => {
                        let upper = e.to_ascii_uppercase();
                        let number = upper.len() == 5 && upper.bytes().all(|b| b.is_ascii_digit());
                        if !number && !LIST_METHODS.contains(&upper.as_str()) {
                            return Err(bad(invalid(format!(
                                "entity {e:?} must be MB, MBWAY, PAYSHOP, CCARD, COFIDIS, GOOGLE, APPLE, PIX or a 5-digit entity number"
                            ))));
                        }
                        Some(upper)
                    }
                };
                for (field, value) in [
                    ("sub_entity", &p.sub_entity),
                    ("order_id", &p.order_id),
                    ("reference", &p.reference),
                    ("request_id", &p.request_id),
                ] {
                    check_optional(field, value.as_deref(), 100).map_err(bad)?;
                }
                let amount = match &p.amount {
                    None => None,
                    Some(a) => Some(
                        Money::parse_positive(a.trim(), eur)
                            .map_err(|_| {
                                invalid(format!(
                                    "amount {a:?} must be a decimal above 0 with at most two decimals, e.g. \"25.00\""
                                ))
                            })
                            .map_err(bad)?,
                    ),
                };
                let date_start = p
                    .date_start
                    .as_deref()
                    .map(|d| parse_list_date("date_start", d))
                    .transpose()
                    .map_err(bad)?;
                let date_end = p
                    .date_end
                    .as_deref()
                    .map(|d| parse_list_date("date_end", d))
                    .transpose()
                    .map_err(bad)?;
                if let (Some(s), Some(e)) = (date_start, date_end) {
                    if s > e {
                        return Err(bad(invalid("date_start is after date_end")));
                    }
                }
                let key = self.resolve_key(identity, KeyKind::Backoffice, p.bo_key.as_deref())?;
                Ok(Prepared::List(
                    key,
                    PaymentsQuery {
                        entity,
                        sub_entity: p.sub_entity.map(SecretString::from),
                        order_id: p.order_id,
                        reference: p.reference,
                        request_id: p.request_id,
                        amount,
                        date_start,
                        date_end,
                    },
                ))
            }
            other => Err(bad(invalid(format!(
                "unknown tool {other:?}: this toolset has {}",
                TOOLS.join(", ")
            )))),
        }
    }
}

/// Sets each `(name, value)` whose value is present as a JSON string field of `body`; absent
/// values leave `body` as it is (ifthenpay's optional request fields are omitted, not null).
fn set_present<const N: usize>(body: &mut serde_json::Value, fields: [(&str, Option<String>); N]) {
    for (name, value) in fields {
        if let Some(v) = value {
            body[name] = json!(v);
        }
    }
}
