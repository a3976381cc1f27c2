//! The reporting queries: `get_transactions` and `search_transactions`.

use super::*;

impl OppService {
    /// The policy's word on a read: `None` to go ahead, or the refusal. Reads cannot be
    /// confirmed or approved; a policy that says anything but `allow` for one refuses it.
    pub(super) fn read_refusal(&self, caller: &Caller, tool: &str) -> Option<ToolOutcome> {
        let input = PolicyInput {
            toolset: TOOLSET.into(),
            tool: tool.into(),
            entity: caller.entity_id.clone(),
            moves_money: false,
            client: caller.client_name.clone(),
            ..PolicyInput::default()
        };
        match self.pipeline.safety().policy.evaluate(&input) {
            Ok(v) if v.decision == Decision::Allow => None,
            Ok(v) => {
                let mut outcome = self.pipeline.error_outcome(
                    "denied_by_policy",
                    &format!(
                        "{tool} is refused by policy rule {:?}: {}",
                        v.rule, v.message
                    ),
                    None,
                );
                outcome.audit.outcome = "denied".into();
                Some(outcome)
            }
            Err(e) => Some(self.pipeline.error_outcome(
                "policy_error",
                &format!("{tool} is refused: the policy could not be evaluated ({e})"),
                None,
            )),
        }
    }

    /// Reads OPP's transaction report for `from..=to` page by page (100 per OPP page), up to
    /// [`SEARCH_SCAN_LIMIT`] transactions, starting from `first` when the caller has already
    /// read OPP's page 1 (`limit` 100); the flag is true when the report is incomplete: more
    /// matched and were not read, or OPP answered the same page twice (it ignored `pageNo`).
    ///
    /// # Errors
    /// The first [`OppError`] of a report page.
    pub(super) async fn scan_report(
        &self,
        credentials: &OppCredentials,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        payment_types: &[PaymentType],
        payment_methods: &[String],
        mut first: Option<crate::connectors::opp::ReportPage>,
    ) -> Result<(Vec<Transaction>, bool), OppError> {
        let mut scanned = Vec::new();
        let mut opp_page = 1;
        let mut truncated = false;
        let mut previous_ids: Vec<String> = Vec::new();
        loop {
            let report = ReportQuery {
                from,
                to,
                payment_types: payment_types.to_vec(),
                payment_methods: payment_methods.to_vec(),
                limit: 100,
                page_no: opp_page,
            };
            let page = match first.take() {
                Some(page) if opp_page == 1 => page,
                _ => self.client.report(credentials, &report).await?,
            };
            // Paging follows what OPP returned (`record_count`), not the transactions kept
            // after mapping: a page of 100 records with some paywarden cannot map is still full.
            let n = page.record_count;
            if opp_page > 1 && n > 0 && page.record_ids == previous_ids {
                // OPP answered the same page again: it ignored `pageNo`. Stop, and say the
                // report is incomplete rather than read page 1 over and over.
                tracing::warn!(
                    page = opp_page,
                    "OPP returned the same report page twice; the report is incomplete"
                );
                truncated = true;
                break;
            }
            if page.total_pages.is_some_and(|t| t > 0) && page.page_no != opp_page {
                // OPP says it answered another page than the one asked for.
                tracing::warn!(
                    asked = opp_page,
                    answered = page.page_no,
                    "OPP answered another report page; the report is incomplete"
                );
                truncated = true;
                break;
            }
            scanned.extend(page.transactions);
            if scanned.len() >= SEARCH_SCAN_LIMIT {
                truncated = page.total_pages.is_some_and(|t| t > opp_page) || n >= 100;
                scanned.truncate(SEARCH_SCAN_LIMIT);
                break;
            }
            let more = match page.total_pages {
                Some(total) => opp_page < total,
                None => n >= 100,
            };
            if !more || n == 0 {
                break;
            }
            previous_ids = page.record_ids;
            opp_page += 1;
        }
        Ok((scanned, truncated))
    }

    /// `get_transactions`: by id (with linked transactions) or by merchant reference; with
    /// neither (the OPP seed makes every parameter optional), the most recent transactions of
    /// the last [`RECENT_WINDOW_DAYS`] days, newest first, paged like `search_transactions`.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] when both of id and merchantTransactionId are given,
    /// paging is out of range, or a value is malformed; [`ServiceError::Store`].
    pub async fn get_transactions(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: LookupParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.pipeline
            .read(caller, TOOLSET, "get_transactions", arguments, || async {
                if let Some(refusal) = self.read_refusal(caller, "get_transactions") {
                    return Ok(refusal);
                }
                let query = LookupQuery {
                    id: params.id.as_deref().map(|i| validate_id("id", i)).transpose()?,
                    merchant_transaction_id: validate_merchant_reference(
                        params.merchant_transaction_id.clone(),
                    )?,
                    include_linked: params.include_linked.unwrap_or(true),
                    payment_types: parse_payment_types("paymentTypes", &params.payment_types)?,
                };
                if query.id.is_some() || query.merchant_transaction_id.is_some() {
                    if params.limit.is_some() || params.page_no.is_some() {
                        return Err(invalid(
                            "limit and pageNo page the most recent transactions (no id or merchantTransactionId); drop them, or drop id/merchantTransactionId",
                        ));
                    }
                } else {
                    return self.recent_transactions(caller, &query, &params).await;
                }
                let credentials = Self::credentials(caller);
                let found = match (&query.id, &query.merchant_transaction_id) {
                    (Some(id), None) => {
                        self.client
                            .query_by_id(&credentials, id, query.include_linked, &query.payment_types)
                            .await
                    }
                    (None, Some(m)) => {
                        match self.client.query_by_merchant_transaction_id(&credentials, m).await {
                            Ok(found) if query.include_linked => {
                                // OPP links by id only: expand each match to its payment.
                                let mut all: Vec<Transaction> = Vec::new();
                                let mut failure = None;
                                for tx in &found {
                                    if all.iter().any(|t| t.id == tx.id) {
                                        continue;
                                    }
                                    match self
                                        .client
                                        .query_by_id(&credentials, &tx.id, true, &query.payment_types)
                                        .await
                                    {
                                        Ok(linked) => {
                                            for l in linked {
                                                if !all.iter().any(|t| t.id == l.id) {
                                                    all.push(l);
                                                }
                                            }
                                        }
                                        Err(e) => {
                                            failure = Some(e);
                                            break;
                                        }
                                    }
                                }
                                match failure {
                                    Some(e) => Err(e),
                                    None => Ok(all),
                                }
                            }
                            Ok(found) => Ok(found
                                .into_iter()
                                .filter(|t| {
                                    query.payment_types.is_empty()
                                        || query.payment_types.contains(&t.payment_type)
                                })
                                .collect()),
                            Err(e) => Err(e),
                        }
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "give either id or merchantTransactionId, not both",
                        ))
                    }
                    (None, None) => return self.recent_transactions(caller, &query, &params).await,
                };
                match found {
                    Ok(transactions) => {
                        let (code, description) =
                            paywarden_domain::result_code::codes::SUCCESSFUL_REQUEST;
                        let output = LookupOutput {
                            result: ResultInfo::new(code, description),
                            payments: transactions.iter().map(Transaction::view).collect(),
                            recent: None,
                            sandbox: self.pipeline.sandbox(),
                        };
                        let text = format!("Found {} transaction(s).", output.payments.len());
                        Ok(self.pipeline.serialized_outcome(
                            &text,
                            &output,
                            AuditFacts {
                                outcome: "ok".into(),
                                result_code: Some(code.to_string()),
                                provider_request_id: None,
                                transaction_id: query.id.clone(),
                                receipt: None,
                            },
                        )?)
                    }
                    Err(OppError::NotFound { result }) => Ok(self.pipeline.error_outcome(
                        "not_found",
                        &format!(
                            "No transaction found ({} {}): check the id or merchantTransactionId; transactions of other entities are never visible.",
                            result.code, result.description
                        ),
                        Some(&result.code),
                    )),
                    Err(e) => Ok(self.provider_failure("get_transactions", e, true).0),
                }
            })
            .await
    }

    /// Page `page_no` (of `limit`) of the report's `total` matches counted newest first, read
    /// from OPP's oldest-first report: ranks `(page_no - 1) * limit ..` from the newest are
    /// OPP's positions `total - page_no * limit .. total - (page_no - 1) * limit`, on at most
    /// two of OPP's pages of `limit`. Newest first, ties (the same second) by id as the scan
    /// orders them. Transactions that arrived since OPP counted `total` shift the positions by
    /// as many (the report is read in separate requests, as every paged read of it is), and so
    /// does a record of an OPP page that paywarden cannot map (it is skipped, as the scan skips
    /// it).
    ///
    /// # Errors
    /// The first [`OppError`] of a report page.
    async fn newest_first_page(
        &self,
        credentials: &OppCredentials,
        report: &impl Fn(u32, u32) -> ReportQuery,
        total: u64,
        limit: u32,
        page_no: u32,
    ) -> Result<Vec<Transaction>, OppError> {
        let size = u64::from(limit);
        let end = total.saturating_sub(u64::from(page_no - 1) * size);
        if end == 0 {
            return Ok(Vec::new());
        }
        let start = total.saturating_sub(u64::from(page_no) * size);
        let (first_page, last_page) = (start / size + 1, (end - 1) / size + 1);
        let mut positioned = Vec::new();
        for opp_page in first_page..=last_page {
            let opp_page_no = u32::try_from(opp_page).unwrap_or(u32::MAX);
            let page = self
                .client
                .report(credentials, &report(limit, opp_page_no))
                .await?;
            let first_position = (opp_page - 1) * size;
            positioned.extend(
                page.transactions
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (first_position + i as u64, t)),
            );
        }
        let mut page: Vec<Transaction> = positioned
            .into_iter()
            .filter(|(position, _)| (start..end).contains(position))
            .map(|(_, t)| t)
            .collect();
        newest_first(&mut page);
        Ok(page)
    }

    /// `get_transactions` without an id: the last [`RECENT_WINDOW_DAYS`] days of OPP's report,
    /// newest first, one page of `limit` (default 20).
    pub(super) async fn recent_transactions(
        &self,
        caller: &Caller,
        query: &LookupQuery,
        params: &LookupParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let limit = params.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(invalid("limit must be between 1 and 100"));
        }
        let page_no = params.page_no.unwrap_or(1);
        if page_no == 0 {
            return Err(invalid("pageNo starts at 1"));
        }
        let to = Utc::now();
        let from = to - ChronoDuration::days(RECENT_WINDOW_DAYS);
        let credentials = Self::credentials(caller);
        let report = |limit: u32, page_no: u32| ReportQuery {
            from,
            to,
            payment_types: query.payment_types.clone(),
            payment_methods: Vec::new(),
            limit,
            page_no,
        };
        // OPP's report answers oldest first. Its first page (100) says how many match
        // (`totalCount`): up to SEARCH_SCAN_LIMIT they are all read and sorted newest first
        // here; beyond, the page asked for is read straight from the end of the report, since
        // reading from its start would stop at the oldest SEARCH_SCAN_LIMIT and never reach
        // the newest.
        let first = match self.client.report(&credentials, &report(100, 1)).await {
            Ok(first) => first,
            Err(e) => return Ok(self.provider_failure("get_transactions", e, true).0),
        };
        let (payments, total_count, truncated): (Vec<TransactionView>, u64, bool) =
            match first.total_count {
                Some(total) if total > SEARCH_SCAN_LIMIT as u64 => {
                    let page = match self
                        .newest_first_page(&credentials, &report, total, limit, page_no)
                        .await
                    {
                        Ok(page) => page,
                        Err(e) => return Ok(self.provider_failure("get_transactions", e, true).0),
                    };
                    (page.iter().map(Transaction::view).collect(), total, false)
                }
                _ => {
                    let (mut scanned, truncated) = match self
                        .scan_report(
                            &credentials,
                            from,
                            to,
                            &query.payment_types,
                            &[],
                            Some(first),
                        )
                        .await
                    {
                        Ok(found) => found,
                        Err(e) => return Ok(self.provider_failure("get_transactions", e, true).0),
                    };
                    newest_first(&mut scanned);
                    let start = (page_no as usize - 1).saturating_mul(limit as usize);
                    let payments = scanned
                        .iter()
                        .skip(start)
                        .take(limit as usize)
                        .map(Transaction::view)
                        .collect();
                    (payments, scanned.len() as u64, truncated)
                }
            };
        let total_pages = u32::try_from(total_count.div_ceil(u64::from(limit))).unwrap_or(u32::MAX);
        let (code, description) = paywarden_domain::result_code::codes::SUCCESSFUL_REQUEST;
        let output = LookupOutput {
            result: ResultInfo::new(code, description),
            payments,
            recent: Some(RecentPage {
                page_no,
                limit,
                total_count,
                total_pages,
                date_from: from.format("%Y-%m-%d %H:%M:%S").to_string(),
                date_to: to.format("%Y-%m-%d %H:%M:%S").to_string(),
                truncated,
            }),
            sandbox: self.pipeline.sandbox(),
        };
        let text = format!(
            "No id or merchantTransactionId given: the most recent transactions of the last {RECENT_WINDOW_DAYS} days, newest first; page {page_no} of {} ({} shown of {total_count}{}).",
            total_pages.max(1),
            output.payments.len(),
            if truncated { ", older ones not read: narrow the range with search_transactions" } else { "" },
        );
        Ok(self.pipeline.serialized_outcome(
            &text,
            &output,
            AuditFacts {
                outcome: "ok".into(),
                result_code: Some(code.to_string()),
                ..AuditFacts::default()
            },
        )?)
    }

    /// `search_transactions`: OPP's transaction report for the date range. Every filter OPP's
    /// reporting API documents is sent to OPP: `paymentTypes`, `paymentMethods`, `limit` and
    /// `pageNo` on the date-range report, `merchantTransactionId` as OPP's merchant-reference
    /// query (range and types applied here to its few matches). Without a filter OPP cannot
    /// apply, the answer is exactly the OPP report page asked for, with OPP's `totalCount`
    /// (one call, never `truncated`). With one (result category, currency, amount range),
    /// paywarden reads the report page by page up to [`SEARCH_SCAN_LIMIT`] transactions,
    /// filters and pages itself, and says `truncated` when more matched OPP's filters.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for malformed filters; [`ServiceError::Store`].
    pub async fn search_transactions(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: SearchParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.pipeline
            .read(caller, TOOLSET, "search_transactions", arguments, || async {
                if let Some(refusal) = self.read_refusal(caller, "search_transactions") {
                    return Ok(refusal);
                }
                let now = Utc::now();
                let to = match &params.date_to {
                    Some(raw) => parse_date("dateTo", raw, true)?,
                    None => now,
                };
                let from = match &params.date_from {
                    Some(raw) => parse_date("dateFrom", raw, false)?,
                    None => to - ChronoDuration::days(30),
                };
                if from > to {
                    return Err(invalid("dateFrom is after dateTo: swap them"));
                }
                let payment_types = parse_payment_types("paymentTypes", &params.payment_types)?;
                let mut categories = Vec::new();
                for c in &params.result_categories {
                    let known = [
                        "success",
                        "success_manual_review",
                        "pending",
                        "rejected_by_bank",
                        "rejected_by_validation",
                        "communication_error",
                        "system_error",
                        "unknown",
                    ];
                    if !known.contains(&c.as_str()) {
                        return Err(invalid(format!(
                            "resultCategories contains {c:?}: use {}",
                            known.join(", ")
                        )));
                    }
                    categories.push(c.clone());
                }
                let currency = params
                    .currency
                    .as_deref()
                    .map(Currency::from_code)
                    .transpose()
                    .map_err(|e| invalid(e.to_string()))?;
                let bound = |field: &str, raw: &Option<String>| -> Result<Option<Money>, ServiceError> {
                    match raw {
                        None => Ok(None),
                        Some(raw) => {
                            let Some(currency) = currency else {
                                return Err(invalid(format!(
                                    "{field} needs currency: amounts are compared in one currency's minor units"
                                )));
                            };
                            Money::parse(raw, currency)
                                .map(Some)
                                .map_err(|e| invalid(format!("{field}: {e}")))
                        }
                    }
                };
                let amount_min = bound("amountMin", &params.amount_min)?;
                let amount_max = bound("amountMax", &params.amount_max)?;
                if let (Some(a), Some(b)) = (amount_min, amount_max) {
                    if a.minor_units() > b.minor_units() {
                        return Err(invalid("amountMin is larger than amountMax"));
                    }
                }
                let merchant = validate_merchant_reference(params.merchant_transaction_id.clone())?;
                let limit = params.limit.unwrap_or(20);
                if !(1..=100).contains(&limit) {
                    return Err(invalid("limit must be between 1 and 100"));
                }
                let page_no = params.page_no.unwrap_or(1);
                if page_no == 0 {
                    return Err(invalid("pageNo starts at 1"));
                }
                for m in &params.payment_methods {
                    if m.is_empty() || m.len() > 8 || !m.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(invalid(format!(
                            "paymentMethods contains {m:?}: use OPP payment method codes such as CC (credit card) or DC (debit card)"
                        )));
                    }
                }

                let credentials = Self::credentials(caller);
                let keeps = |t: &Transaction| {
                    (categories.is_empty()
                        || categories.contains(&serde_label(&t.result.category())))
                        && currency.is_none_or(|c| t.amount.currency() == c)
                        && amount_min.is_none_or(|m| t.amount.minor_units() >= m.minor_units())
                        && amount_max.is_none_or(|m| t.amount.minor_units() <= m.minor_units())
                };
                let paywarden_filters = !categories.is_empty()
                    || currency.is_some()
                    || amount_min.is_some()
                    || amount_max.is_some();
                // Which way the search reaches OPP (docs/emulator.md, "GET /v1/query"; OPP's
                // "Transaction Reports" guide, docs.oppwa.com/tutorials/reporting/transaction):
                // 1. a merchant reference: `GET /v1/query?merchantTransactionId=` returns every
                //    transaction with it; the range and type filters apply here;
                // 2. nothing OPP cannot filter itself: the report's own page (`limit`,
                //    `pageNo`, `paymentTypes`, `paymentMethods`), counted by OPP (`totalCount`);
                // 3. otherwise, read the report page by page (up to SEARCH_SCAN_LIMIT) and filter
                //    and page here; `truncated` says when the scan stopped short.
                let mut direct: Option<(Vec<Transaction>, u64)> = None;
                if let (Some(reference), true) = (&merchant, params.payment_methods.is_empty()) {
                    let found = match self
                        .client
                        .query_by_merchant_transaction_id(&credentials, reference)
                        .await
                    {
                        Ok(found) => found,
                        Err(OppError::NotFound { .. }) => Vec::new(),
                        Err(e) => {
                            return Ok(self.provider_failure("search_transactions", e, true).0)
                        }
                    };
                    let mut matches: Vec<Transaction> = found
                        .into_iter()
                        .filter(|t| t.timestamp.is_some_and(|at| at >= from && at <= to))
                        .filter(|t| payment_types.is_empty() || payment_types.contains(&t.payment_type))
                        .filter(|t| keeps(t))
                        .collect();
                    // Oldest first, as the report (OPP answers oldest first; keep it stable).
                    matches.sort_by_key(|t| t.timestamp);
                    let total = matches.len() as u64;
                    let start = (page_no as usize - 1).saturating_mul(limit as usize);
                    let page: Vec<Transaction> =
                        matches.into_iter().skip(start).take(limit as usize).collect();
                    direct = Some((page, total));
                } else if !paywarden_filters && merchant.is_none() {
                    let report = ReportQuery {
                        from,
                        to,
                        payment_types: payment_types.clone(),
                        payment_methods: params.payment_methods.clone(),
                        limit,
                        page_no,
                    };
                    match self.client.report(&credentials, &report).await {
                        // OPP counted the matches and answered the page asked for: that is the
                        // answer. Without a count, or for another page, fall back to the scan.
                        Ok(page)
                            if page.total_count.is_some()
                                && (page.page_no == page_no || page.record_count == 0) =>
                        {
                            let total = page.total_count.unwrap_or_default();
                            direct = Some((page.transactions, total));
                        }
                        Ok(_) => tracing::warn!(
                            "OPP's report page carried no totalCount or another page; scanning the report"
                        ),
                        Err(e) => {
                            return Ok(self.provider_failure("search_transactions", e, true).0)
                        }
                    }
                }
                let (records, total_count, truncated): (Vec<TransactionView>, u64, bool) =
                    match direct {
                        Some((page, total)) => {
                            (page.iter().map(Transaction::view).collect(), total, false)
                        }
                        None => {
                            let (scanned, truncated) = match self
                                .scan_report(
                                    &credentials,
                                    from,
                                    to,
                                    &payment_types,
                                    &params.payment_methods,
                                    None,
                                )
                                .await
                            {
                                Ok(found) => found,
                                Err(e) => {
                                    return Ok(self
                                        .provider_failure("search_transactions", e, true)
                                        .0)
                                }
                            };
                            let matches: Vec<&Transaction> = scanned
                                .iter()
                                .filter(|t| keeps(t))
                                .filter(|t| {
                                    merchant.is_none()
                                        || t.merchant_transaction_id.as_deref()
                                            == merchant.as_deref()
                                })
                                .collect();
                            let start = (page_no as usize - 1).saturating_mul(limit as usize);
                            let records = matches
                                .iter()
                                .skip(start)
                                .take(limit as usize)
                                .map(|t| t.view())
                                .collect();
                            (records, matches.len() as u64, truncated)
                        }
                    };
                let total_pages =
                    u32::try_from(total_count.div_ceil(u64::from(limit))).unwrap_or(u32::MAX);
                let (code, description) = paywarden_domain::result_code::codes::SUCCESSFUL_REQUEST;
                let output = SearchOutput {
                    result: ResultInfo::new(code, description),
                    records,
                    page_no,
                    limit,
                    total_count,
                    total_pages,
                    date_from: from.format("%Y-%m-%d %H:%M:%S").to_string(),
                    date_to: to.format("%Y-%m-%d %H:%M:%S").to_string(),
                    truncated,
                    sandbox: self.pipeline.sandbox(),
                };
                let text = format!(
                    "{} match(es) between {} and {} UTC; page {} of {} ({} shown).{}",
                    total_count,
                    output.date_from,
                    output.date_to,
                    page_no,
                    total_pages.max(1),
                    output.records.len(),
                    if truncated {
                        " The report is INCOMPLETE: OPP's report could not be read to its end (too many matches, or OPP did not page); narrow the date range."
                    } else {
                        ""
                    },
                );
                Ok(self.pipeline.serialized_outcome(
                    &text,
                    &output,
                    AuditFacts {
                        outcome: "ok".into(),
                        result_code: Some(code.to_string()),
                        ..AuditFacts::default()
                    },
                )?)
            })
            .await
    }
}

/// Newest first; ties (the same second) by id, so that pages are stable.
fn newest_first(transactions: &mut [Transaction]) {
    transactions.sort_by(|a, b| b.timestamp.cmp(&a.timestamp).then_with(|| b.id.cmp(&a.id)));
}
