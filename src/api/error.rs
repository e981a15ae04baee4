//! `ApiError`: every way a request fails, and the one place that turns it
//! into an HTTP status and the body `{"error": {"code", "message", "trace_id"}}`,
//! or into a gRPC status with `x-error-code` and `x-trace-id` metadata.
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
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Unauthorized = self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl ApiError {
    /// The gRPC status of this error: the HTTP status's gRPC counterpart, the
    /// same message, and in metadata the same stable code (`x-error-code`),
    /// the trace id (`x-trace-id`) and, for 429 and 503, `retry-after` seconds.
    pub fn to_grpc_status(&self) -> tonic::Status {
        use tonic::Code;
        let (status, code) = self.status_and_code();
        let grpc_code = match status {
            StatusCode::BAD_REQUEST => Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::CONFLICT => Code::FailedPrecondition,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => {
                Code::ResourceExhausted
            }
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
            _ => Code::Internal,
        };
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            "x-error-code",
            tonic::metadata::MetadataValue::from_static(code),
        );
        // Empty outside a request's scope (at the end of a stream): left out.
        let trace_id = super::trace::current();
        if let (false, Ok(value)) = (trace_id.is_empty(), trace_id.parse()) {
            metadata.insert("x-trace-id", value);
        }
        if let Some(secs) = self.retry_after_secs() {
            metadata.insert("retry-after", secs.into());
        }
        tonic::Status::with_metadata(grpc_code, self.to_string(), metadata)
    }

    /// Whole seconds to wait before retrying, rounded up: never tell a
    /// client to retry too early.
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests { retry_after, .. }
            | ApiError::Unavailable { retry_after, .. } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(secs.max(1))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_http_status_has_its_grpc_code_and_the_same_error_code() {
        let retry = Duration::from_millis(1500);
        for (error, grpc, code) in [
            (
                ApiError::Unauthorized,
                Code::Unauthenticated,
                "unauthorized",
            ),
            (
                ApiError::PolicyNotAllowed {
                    policy: "p".into(),
                    allowed: "strict".into(),
                },
                Code::PermissionDenied,
                "policy_not_allowed",
            ),
            (
                RouteError::ImageNotAllowed {
                    image: "python3.11-bookworm".into(),
                    allowed: vec!["host".into()],
                }
                .into(),
                Code::PermissionDenied,
                "image_not_allowed",
            ),
            (
                ApiError::BadRequest {
                    code: "invalid_request",
                    message: "limits.memory".into(),
                },
                Code::InvalidArgument,
                "invalid_request",
            ),
            (
                RouteError::UnknownImage {
                    image: "nope".into(),
                    allowed: vec!["host".into()],
                }
                .into(),
                Code::InvalidArgument,
                "unknown_image",
            ),
            (
                RouteError::UnknownArch {
                    image: "host".into(),
                    arch: "riscv64".into(),
                    offered: vec![crate::Arch::Amd64],
                }
                .into(),
                Code::InvalidArgument,
                "unknown_arch",
            ),
            (
                ApiError::NotFound("no job".into()),
                Code::NotFound,
                "not_found",
            ),
            (
                ApiError::Conflict {
                    code: "job_finished",
                    message: "done".into(),
                },
                Code::FailedPrecondition,
                "job_finished",
            ),
            (
                ApiError::TooManyRequests {
                    code: "rate_limit",
                    message: "slow down".into(),
                    retry_after: retry,
                },
                Code::ResourceExhausted,
                "rate_limit",
            ),
            (
                ApiError::TooManyRequests {
                    code: "cpu_quota",
                    message: "out of CPU seconds".into(),
                    retry_after: retry,
                },
                Code::ResourceExhausted,
                "cpu_quota",
            ),
            (
                ApiError::Unavailable {
                    code: "queue_full",
                    message: "full".into(),
                    retry_after: retry,
                },
                Code::Unavailable,
                "queue_full",
            ),
            (ApiError::Internal, Code::Internal, "internal"),
        ] {
            let status = error.to_grpc_status();
            assert_eq!(status.code(), grpc, "{error:?}");
            assert_eq!(status.message(), error.to_string());
            let metadata = status.metadata();
            assert_eq!(metadata.get("x-error-code").unwrap(), code);
            let retry_after = metadata.get("retry-after").map(|v| v.to_str().unwrap());
            let limited = matches!(grpc, Code::ResourceExhausted | Code::Unavailable);
            assert_eq!(retry_after, limited.then_some("2"), "{error:?}");
        }
    }
}
