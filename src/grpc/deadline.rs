//! Call deadlines: the `grpc-timeout` header, and the status a call gets
//! when its deadline passes.

use std::{sync::Arc, time::Duration};

use http::HeaderMap;
use tonic::Status;
use tower::BoxError;

use crate::ConnectionState;

/// The timeout a request's `grpc-timeout` header asks for (set by
/// `tonic::Request::set_timeout`): at most 8 digits and a unit, `H`, `M`,
/// `S`, `m`, `u` or `n`. A malformed header is ignored, as tonic does.
pub(super) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `DeadlineExceeded` after `limit`; if the call was still waiting for a
/// connection, the message names the last connect error, which is also the
/// status's source.
pub(super) fn deadline_status(limit: Duration, state: &ConnectionState) -> Status {
    let waiting = !state.is_connected();
    match state.last_error.as_ref().filter(|_| waiting) {
        Some(cause) => {
            let mut status = Status::deadline_exceeded(format!(
                "deadline of {limit:?} exceeded while waiting for a connection: {cause}"
            ));
            status.set_source(Arc::clone(cause) as Arc<_>);
            status
        }
        None if waiting => Status::deadline_exceeded(format!(
            "deadline of {limit:?} exceeded while waiting for a connection"
        )),
        None => Status::deadline_exceeded(format!("deadline of {limit:?} exceeded")),
    }
}

/// `DeadlineExceeded` for a call that waited `waited` (the wait timeout)
/// for a connection and was never sent: the message names the last connect
/// error, and redial's [`Unavailable`](crate::error::Unavailable), whose
/// source that error is, is the status's source.
pub(super) fn wait_status(waited: Duration, error: BoxError) -> Status {
    let message = match error.source() {
        Some(cause) => {
            format!("no connection within the wait timeout of {waited:?}, never sent: {cause}")
        }
        None => format!("no connection within the wait timeout of {waited:?}, never sent"),
    };
    let mut status = Status::deadline_exceeded(message);
    status.set_source(Arc::from(error));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &'static str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", http::HeaderValue::from_static(value));
        grpc_timeout(&headers)
    }

    /// Every unit, and the malformed values tonic ignores.
    #[test]
    fn grpc_timeout_header() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "100", "123456789m", "1x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
