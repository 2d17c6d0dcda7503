//! The listener's errors and their responses: a status code and
//! `{"error": "..."}` that says what was wrong and what to do.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::Refusal;
use crate::ops::OpsError;

/// The body of every refusal and failure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong and what to do.
    pub error: String,
}

/// Why a request got no data.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", .0.message(*.1))]
    Unauthorized(Refusal, bool),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the bridge's core has {0} queries waiting already: ask again in a moment")]
    Busy(usize),
    #[error(
        "the bridge's core did not answer within {0:?}: it is overloaded or stopping; ask again"
    )]
    Timeout(std::time::Duration),
    #[error("the bridge is stopping")]
    Stopping,
    #[error("{0}")]
    Failed(String),
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::NotFound(m) => ApiError::NotFound(m),
            OpsError::Invalid(m) => ApiError::Invalid(m),
            OpsError::Busy(m) => ApiError::Failed(m),
            other => ApiError::Failed(other.to_string()),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Busy(_) | ApiError::Timeout(_) | ApiError::Stopping => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(ErrorBody {
            error: self.to_string(),
        });
        let mut r = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ota\""),
            );
        }
        r
    }
}
