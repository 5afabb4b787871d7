//! One place that maps every gateway error to its HTTP status, its side (downstream, upstream,
//! internal), whether a fallback may retry it, and the OpenAI error JSON the client receives.
//! Stages raise typed errors; only this module knows how they look on the wire.

use std::fmt::Write as _;

/// Who caused the failure: decides logging level and whether failover makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// A failure that ends a request with an error response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
        code: &'static str,
    },
    #[error("{message}")]
    Unauthorized { message: String },
    #[error("{message}")]
    Forbidden { message: String, code: &'static str },
    #[error("{message}")]
    NotFound {
        message: String,
        param: Option<String>,
        code: &'static str,
    },
    #[error("request body is {got} bytes; the limit is {limit} bytes")]
    BodyTooLarge { got: u64, limit: u64 },
    #[error("request header section is too large ({what})")]
    HeadersTooLarge { what: &'static str },
    #[error("{message}")]
    RateLimited { message: String, retry_after_s: u64 },
    #[error("{message}")]
    UpstreamFailed { message: String },
    #[error("{message}")]
    UpstreamUnavailable { message: String },
    #[error("{message}")]
    UpstreamTimeout { message: String },
    #[error("{message}")]
    ServiceUnavailable { message: String },
    #[error("{message}")]
    Internal { message: String },
}

impl GatewayError {
    /// 400 for a malformed or invalid request, naming the offending field in `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param: Some(param.into()),
            code: "invalid_request",
        }
    }

    /// 400 for bytes that are not a parseable request at all.
    pub fn malformed(message: impl Into<String>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param: None,
            code: "malformed_request",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest { .. } => 400,
            GatewayError::Unauthorized { .. } => 401,
            GatewayError::Forbidden { .. } => 403,
            GatewayError::NotFound { .. } => 404,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::HeadersTooLarge { .. } => 431,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::UpstreamFailed { .. } => 502,
            GatewayError::UpstreamUnavailable { .. } => 503,
            GatewayError::ServiceUnavailable { .. } => 503,
            GatewayError::UpstreamTimeout { .. } => 504,
            GatewayError::Internal { .. } => 500,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            GatewayError::UpstreamFailed { .. }
            | GatewayError::UpstreamUnavailable { .. }
            | GatewayError::UpstreamTimeout { .. } => Side::Upstream,
            GatewayError::Internal { .. } | GatewayError::ServiceUnavailable { .. } => {
                Side::Internal
            }
            _ => Side::Downstream,
        }
    }

    /// The OpenAI `error.type` value.
    pub fn error_type(&self) -> &'static str {
        match self {
            GatewayError::BadRequest { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::HeadersTooLarge { .. } => "invalid_request_error",
            GatewayError::Unauthorized { .. } => "authentication_error",
            GatewayError::Forbidden { .. } => "permission_error",
            GatewayError::RateLimited { .. } => "rate_limit_error",
            GatewayError::UpstreamFailed { .. }
            | GatewayError::UpstreamUnavailable { .. }
            | GatewayError::UpstreamTimeout { .. } => "upstream_error",
            GatewayError::ServiceUnavailable { .. } | GatewayError::Internal { .. } => {
                "server_error"
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest { code, .. } => code,
            GatewayError::Unauthorized { .. } => "invalid_api_key",
            GatewayError::Forbidden { code, .. } => code,
            GatewayError::NotFound { code, .. } => code,
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::HeadersTooLarge { .. } => "headers_too_large",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::UpstreamFailed { .. } => "upstream_failed",
            GatewayError::UpstreamUnavailable { .. } => "upstream_unavailable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::ServiceUnavailable { .. } => "service_unavailable",
            GatewayError::Internal { .. } => "internal_error",
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::BadRequest { param, .. } | GatewayError::NotFound { param, .. } => {
                param.as_deref()
            }
            _ => None,
        }
    }

    /// Seconds for a `Retry-After` header, where the error has one.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(160);
        out.push_str("{\"error\":{\"message\":");
        push_json_str(&mut out, &self.to_string());
        out.push_str(",\"type\":");
        push_json_str(&mut out, self.error_type());
        out.push_str(",\"param\":");
        match self.param() {
            Some(p) => push_json_str(&mut out, p),
            None => out.push_str("null"),
        }
        out.push_str(",\"code\":");
        push_json_str(&mut out, self.code());
        out.push_str("}}");
        out.into_bytes()
    }
}

/// Appends `s` as a JSON string literal (quotes included).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The reason phrase for the statuses the gateway writes.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Site Overloaded",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_openai_shape() {
        let e = GatewayError::invalid("messages[0].role", "role must be a string");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["param"], "messages[0].role");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn json_string_escapes_controls() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
