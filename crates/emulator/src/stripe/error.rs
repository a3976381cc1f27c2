//! Stripe's error object (`{"error":{"type","code","message","param",...}}`) with Stripe's HTTP
//! statuses, as returned by every Stripe endpoint of the emulator (the response itself, with its
//! `Request-Id` and `WWW-Authenticate` headers, is built by `super::respond_error`).

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::error::EmulatorError;

/// Why a Stripe request failed: a Stripe API error (answered as Stripe would) or a storage
/// failure (HTTP 500 `api_error`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A Stripe error object; `status` is the HTTP status Stripe uses for it.
    #[error("{message}")]
    Stripe {
        status: StatusCode,
        /// Stripe `error.type`: `invalid_request_error`, `card_error`, `idempotency_error`, ...
        kind: &'static str,
        /// Stripe `error.code`, e.g. `resource_missing`.
        code: Option<&'static str>,
        message: String,
        /// Stripe `error.param`: the offending parameter, in its form-encoded name.
        param: Option<String>,
        /// Extra fields of the error object (`decline_code`, `charge`, `payment_intent`, ...).
        extra: Map<String, Value>,
    },
    /// The SQLite state failed; answered as HTTP 500 `api_error`.
    #[error(transparent)]
    Internal(#[from] EmulatorError),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(EmulatorError::Database(e))
    }
}

impl ApiError {
    /// HTTP 400 `invalid_request_error`.
    pub(crate) fn invalid(
        code: Option<&'static str>,
        message: impl Into<String>,
        param: Option<&str>,
    ) -> Self {
        ApiError::Stripe {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: param.map(str::to_string),
            extra: Map::new(),
        }
    }

    /// HTTP 400 `parameter_missing`: "Missing required param: {param}."
    pub(crate) fn missing(param: &str) -> Self {
        Self::invalid(
            Some("parameter_missing"),
            format!("Missing required param: {param}."),
            Some(param),
        )
    }

    /// HTTP 400 `parameter_unknown`: "Received unknown parameter: {param}"
    pub(crate) fn unknown_param(param: &str) -> Self {
        Self::invalid(
            Some("parameter_unknown"),
            format!("Received unknown parameter: {param}"),
            Some(param),
        )
    }

    /// HTTP 400 `parameter_invalid_integer` with Stripe's message.
    pub(crate) fn invalid_integer(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(Some("parameter_invalid_integer"), message, Some(param))
    }

    /// `resource_missing`: "No such {object}: '{id}'". HTTP 404 for an id in the URL path
    /// (`param: "id"`), HTTP 400 for an id in a parameter.
    pub(crate) fn no_such(object: &str, id: &str, param: &str) -> Self {
        let status = if param == "id" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::Stripe {
            status,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            message: format!("No such {object}: '{id}'"),
            param: Some(param.to_string()),
            extra: Map::new(),
        }
    }

    /// HTTP 401 `invalid_request_error` (no code), for a missing or unknown API key.
    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::Stripe {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: None,
            message: message.into(),
            param: None,
            extra: Map::new(),
        }
    }

    /// The HTTP status this error is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Stripe { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body: `{"error": {...}}`.
    pub(crate) fn body(&self) -> Value {
        match self {
            ApiError::Stripe {
                kind,
                code,
                message,
                param,
                extra,
                ..
            } => {
                let mut error = Map::new();
                error.insert("type".into(), json!(kind));
                // Stripe's spec (`api_errors.code`: a string, not nullable) and its answers: an
                // error with no code has no `code` key at all, never `"code": null`.
                if let Some(code) = code {
                    error.insert("code".into(), json!(code));
                    error.insert(
                        "doc_url".into(),
                        json!(format!(
                            "https://stripe.com/docs/error-codes/{}",
                            code.replace('_', "-")
                        )),
                    );
                }
                error.insert("message".into(), json!(message));
                if let Some(param) = param {
                    error.insert("param".into(), json!(param));
                }
                for (k, v) in extra {
                    error.insert(k.clone(), v.clone());
                }
                json!({ "error": error })
            }
            ApiError::Internal(_) => json!({
                "error": {
                    "type": "api_error",
                    "message": "An unknown error occurred in the paywarden Stripe emulator's storage."
                }
            }),
        }
    }
}
