//! `ApiError`: every way a request fails, and the one place that turns it
//! into a status code and the body `{"error": {"code", "message", "trace_id"}}`.
//! Internal details go to the log, never to the client.

use crate::executor::images::RouteError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// A request that failed, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No bearer token, or one no tenant has.
    #[error("a valid bearer token is required (Authorization: Bearer TOKEN)")]
    Unauthorized,
    /// The tenant may not use this policy.
    #[error("policy {policy:?} is not allowed for this tenant; allowed: {allowed}")]
    PolicyNotAllowed {
        /// The policy asked for.
        policy: String,
        /// The tenant's policies.
        allowed: String,
    },
    /// The tenant may not use this image.
    #[error("image {image:?} is not allowed for this tenant; allowed: {allowed}")]
    ImageNotAllowed {
        /// The image asked for.
        image: String,
        /// The tenant's images.
        allowed: String,
    },
    /// The request body is not valid JSON or not a valid request.
    #[error("{message}")]
    BadRequest {
        /// `invalid_json`, `invalid_request`, `unknown_policy`, `unknown_image`, `unknown_arch`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than the server accepts.
    #[error("the request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// No such route or job.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The job is not in a state that allows this.
    #[error("{message}")]
    Conflict {
        /// `job_finished`.
        code: &'static str,
        /// What state it is in.
        message: String,
    },
    /// The tenant is over its concurrency cap, rate quota or CPU quota.
    #[error("{message}")]
    TooManyRequests {
        /// `concurrency_limit`, `rate_limit` or `cpu_quota`.
        code: &'static str,
        /// What limit.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The server is overloaded or shutting down.
    #[error("{message}")]
    Unavailable {
        /// `queue_full`, `shutting_down`.
        code: &'static str,
        /// Why.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// Our fault; the detail is in the log.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Logs `error` (with the request's span) and hides it from the client.
    pub fn internal(error: &dyn std::error::Error) -> ApiError {
        tracing::error!(error = %error, "request failed inside the server");
        ApiError::Internal
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::PolicyNotAllowed { .. } => (StatusCode::FORBIDDEN, "policy_not_allowed"),
            ApiError::ImageNotAllowed { .. } => (StatusCode::FORBIDDEN, "image_not_allowed"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(error: RouteError) -> ApiError {
        match error {
            RouteError::ImageNotAllowed { image, allowed } => ApiError::ImageNotAllowed {
                image,
                allowed: allowed.join(", "),
            },
            RouteError::UnknownImage { .. } => ApiError::BadRequest {
                code: "unknown_image",
                message: error.to_string(),
            },
            RouteError::UnknownArch { .. } => ApiError::BadRequest {
                code: "unknown_arch",
                message: error.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({
            "error": {"code": code, "message": self.to_string(), "trace_id": super::trace::current()}
        });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::TooManyRequests { retry_after, .. }
            | ApiError::Unavailable { retry_after, .. } => {
                // Whole seconds, rounded up: never tell a client to retry too early.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
