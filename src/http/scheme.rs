use std::{error::Error as StdError, fmt};

use http::{uri::Scheme, Uri};

/// Which target schemes a connector dials: checked before it dials, so a
/// target of the wrong kind fails the attempt at once, with an error that
/// names the rule, instead of plain HTTP reaching a TLS server (or the
/// reverse) and failing in some less telling way, or hanging until the
/// connect timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Schemes {
    /// `http` only: the connector's own `HttpConnector`, plain TCP.
    Http,
    /// `https` only: TLS.
    Https,
    /// Whatever the connector given to `with_connector` takes: it decides.
    Any,
}

impl Schemes {
    pub(crate) fn check(self, target: &Uri) -> Result<(), SchemeMismatch> {
        let wanted = match self {
            Self::Http => Scheme::HTTP,
            Self::Https => Scheme::HTTPS,
            Self::Any => return Ok(()),
        };
        match target.scheme() {
            Some(scheme) if *scheme == wanted => Ok(()),
            scheme => Err(SchemeMismatch {
                scheme: scheme.cloned(),
                tls: self == Self::Https,
            }),
        }
    }
}

/// The target's scheme does not fit the connector: an `https://` target on
/// a connector without TLS, an `http://` target on one with TLS, or a
/// target with another scheme or none.
///
/// The connector refuses the target before it dials, so the attempt fails
/// at once rather than by the connect timeout; under
/// [`Reconnect`](crate::Reconnect) it is the source of a
/// [`ConnectFailed`](crate::error::ConnectFailed). The target will not fit
/// on a later attempt either: the fix is the target or the connector.
///
/// A connector built by `Http1Connector::new` or `Http2Connector::new` dials
/// `http://` targets; after `.tls(config)` (feature `tls`), `https://`
/// targets. One built by `with_connector` leaves the scheme to the
/// connector it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeMismatch {
    scheme: Option<Scheme>,
    tls: bool,
}

impl SchemeMismatch {
    /// The target's scheme, if it had one.
    pub fn scheme(&self) -> Option<&Scheme> {
        self.scheme.as_ref()
    }

    /// Whether the connector that refused the target has TLS configured:
    /// then it dials `https://` targets only, and otherwise `http://` ones.
    pub fn tls(&self) -> bool {
        self.tls
    }
}

impl fmt::Display for SchemeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (with, wanted) = match self.tls {
            true => ("with", "https"),
            false => ("without", "http"),
        };
        match &self.scheme {
            Some(scheme) if !self.tls && *scheme == Scheme::HTTPS => {
                f.write_str("https target needs tls configured on the connector")
            }
            Some(scheme) => write!(
                f,
                "{scheme} target: a connector {with} tls dials {wanted} targets only"
            ),
            None => write!(
                f,
                "target without a scheme: a connector {with} tls dials {wanted} targets only"
            ),
        }
    }
}

impl StdError for SchemeMismatch {}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(schemes: Schemes, target: &str) -> Result<(), String> {
        schemes
            .check(&target.parse().unwrap())
            .map_err(|err| err.to_string())
    }

    /// Each rule lets its own scheme through and names itself when it
    /// refuses a target.
    #[test]
    fn each_rule_names_itself() {
        assert_eq!(check(Schemes::Http, "http://a:1"), Ok(()));
        assert_eq!(check(Schemes::Https, "https://a:1"), Ok(()));
        for target in ["http://a", "https://a", "ftp://a", "a:1", "/path"] {
            assert_eq!(check(Schemes::Any, target), Ok(()));
        }

        assert_eq!(
            check(Schemes::Http, "https://a:1").unwrap_err(),
            "https target needs tls configured on the connector"
        );
        assert_eq!(
            check(Schemes::Https, "http://a:1").unwrap_err(),
            "http target: a connector with tls dials https targets only"
        );
        assert_eq!(
            check(Schemes::Http, "ftp://a").unwrap_err(),
            "ftp target: a connector without tls dials http targets only"
        );
        assert_eq!(
            check(Schemes::Https, "a:443").unwrap_err(),
            "target without a scheme: a connector with tls dials https targets only"
        );
    }

    /// The error carries the scheme it refused and which rule refused it.
    #[test]
    fn the_error_carries_its_data() {
        let err = Schemes::Https
            .check(&"http://a".parse().unwrap())
            .unwrap_err();
        assert_eq!(err.scheme(), Some(&Scheme::HTTP));
        assert!(err.tls());
        let err = Schemes::Http.check(&"/x".parse().unwrap()).unwrap_err();
        assert_eq!(err.scheme(), None);
        assert!(!err.tls());
    }
}
