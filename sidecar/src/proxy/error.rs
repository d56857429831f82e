//! Proxy errors, named for what happened, and their one mapping to HTTP
//! responses at the edge.

use http::StatusCode;

use crate::health::Attempt;

/// Why the proxy could not get a response from an upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// No route matched the request.
    #[error("no route matches the request")]
    NoRoute,
    /// The upstream has no endpoint that can take the request.
    #[error("upstream {0} has no available endpoint")]
    NoEndpoint(String),
    /// Connecting to the endpoint failed (retryable: nothing was sent).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The endpoint did not answer in time.
    #[error("{endpoint} did not answer within {timeout:?}")]
    Timeout {
        endpoint: String,
        timeout: std::time::Duration,
    },
    /// The exchange with the endpoint failed after the request was sent.
    #[error("request to {endpoint} failed: {source}")]
    Upstream {
        endpoint: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request itself is unusable.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl ProxyError {
    /// The status the client sees.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// What an attempt on an endpoint came to, for passive health checks;
    /// `None` for errors that are not the endpoint's doing.
    pub(crate) fn attempt(&self) -> Option<Attempt> {
        match self {
            Self::Connect { .. } => Some(Attempt::ConnectFailed),
            Self::Timeout { .. } => Some(Attempt::TimedOut),
            Self::Upstream { .. } => Some(Attempt::Failed),
            Self::NoRoute | Self::NoEndpoint(_) | Self::BadRequest(_) => None,
        }
    }

    /// A short name of the error, for `error.type` in spans.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::NoEndpoint(_) => "no_endpoint",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Upstream { .. } => "upstream",
            Self::BadRequest(_) => "bad_request",
        }
    }

    /// Whether another endpoint may be tried with the same request.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}
