//! What building or connecting an [`Endpoint`](super::Endpoint) can fail with.

use std::{error::Error as StdError, fmt};

use crate::error::Cause;

/// An [`Endpoint`](super::Endpoint) that could not be built (an invalid URI,
/// user agent, or `tls_config` on an `http://` endpoint), or a
/// [`connect`](super::Endpoint::connect) that failed (invalid settings, or a
/// failed first attempt); the cause, if any, is the
/// [`source()`](StdError::source).
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    source: Option<Cause>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    InvalidUri,
    InvalidUserAgent,
    InvalidConfig,
    #[cfg(feature = "tls")]
    TlsOnHttp,
    Connect,
}

impl Error {
    pub(super) fn new(kind: Kind, source: Option<Cause>) -> Self {
        Self { kind, source }
    }

    /// Whether this is a failed connect, rather than a bad setting.
    pub fn is_connect(&self) -> bool {
        self.kind == Kind::Connect
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::InvalidUri => "invalid URI",
            Kind::InvalidUserAgent => "user agent is not a valid header value",
            Kind::InvalidConfig => "invalid endpoint settings",
            #[cfg(feature = "tls")]
            Kind::TlsOnHttp => "tls_config needs an https:// endpoint",
            Kind::Connect => "failed to connect",
        })
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
