//! The OPP toolset's operations on the pipeline: the six back-office operations and the two
//! reporting queries.
//!
//! Every back-office call is checked before anything is sent: paywarden reads the referenced
//! transaction and its linked transactions from OPP (`GET /v1/query/{id}`), applies OPP's state
//! rules ([`paywarden_domain::ledger::evaluate`]) to refuse what OPP would refuse and to work
//! out the default amount (capture and refund default to the remainder), then sends the
//! operation with an explicit amount and currency, as OPP requires. OPP (or the emulator)
//! checks again atomically when it writes.

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, NaiveDateTime, Utc};
use paywarden_domain::{
    ledger::{self, Operation},
    Currency, Money, PaymentType,
};
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use std::future::Future;

use crate::pipeline::{
    operation::{
        Assessment, Call, Checked, Operation as PipelineOperation, Sent, Stop, TransactionLease,
    },
    reconcile::{Found, Intent, Reconciler},
    safety::{binding_hash, ApprovalView, ConfirmationView, PreviewView},
    AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome,
};
use crate::{
    connectors::opp::{BackofficeRequest, OppClient, OppCredentials, OppError, ReportQuery},
    model::{serde_label, ResultInfo, Transaction, TransactionView},
    policy::{Decision, PolicyInput},
    store::{Approval, ApprovalStatus},
};

mod approvals;
mod backoffice;
mod reads;
mod reconciliation;
mod types;
mod validate;

pub use types::*;
pub use validate::*;

/// The toolset's name in configuration and the audit log.
pub const TOOLSET: &str = "opp";

/// The OPP custom parameter (`customParameters[PAYWARDEN_REF]`) carrying paywarden's derived
/// reference of an idempotency key ([`derived_merchant_reference`]) on every keyed operation,
/// whatever `merchantTransactionId` the caller chose: how an operation whose answer paywarden
/// never heard is recognised at OPP.
pub const REFERENCE_PARAMETER: &str = "PAYWARDEN_REF";

/// Largest number of transactions `search_transactions` reads from OPP for one search
/// (100 per page, 20 pages); a larger match is reported as `truncated`.
pub const SEARCH_SCAN_LIMIT: usize = 2_000;

/// The OPP toolset's service.
#[derive(Debug, Clone)]
pub struct OppService {
    pipeline: Pipeline,
    client: OppClient,
}

impl OppService {
    /// The OPP service over `pipeline`, sending to OPP through `client`.
    pub fn new(pipeline: Pipeline, client: OppClient) -> Self {
        Self { pipeline, client }
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The connector.
    pub fn client(&self) -> &OppClient {
        &self.client
    }

    /// OPP transaction `id` as `caller` sees it (OPP's `GET /v1/query/{id}`), `None` when OPP
    /// has none. Not a tool call and not audited: what `tasks/get` reads to follow a pending
    /// transaction (the task audits each change of its status instead).
    ///
    /// # Errors
    /// [`OppError`] of the lookup (unreachable, throttled, refused credentials, ...).
    pub async fn transaction_for_task(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Option<crate::model::Transaction>, OppError> {
        match self
            .client
            .query_by_id(&Self::credentials(caller), id, false, &[])
            .await
        {
            Ok(found) => Ok(found.into_iter().find(|t| t.id == id)),
            Err(OppError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn credentials(caller: &Caller) -> OppCredentials {
        OppCredentials {
            entity_id: caller.entity_id.clone(),
            token: secrecy::SecretString::from(caller.token.expose_secret().to_string()),
        }
    }
}
