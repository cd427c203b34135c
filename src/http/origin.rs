use std::fmt;

use http::{
    header::HOST,
    uri::{Authority, Parts, PathAndQuery, Scheme},
    HeaderValue, Method, Request, Uri,
};

use crate::redact::Redacted;

/// What a connection fills in from its target on requests that leave it
/// out.
pub(crate) struct Origin {
    /// The target's scheme and authority, when it has both, the authority
    /// without userinfo.
    base: Option<(Scheme, Authority)>,
    /// The `Host` header for the target.
    host: Option<HeaderValue>,
}

impl Origin {
    pub(crate) fn new(target: &Uri) -> Self {
        let authority = target.authority().and_then(without_userinfo);
        let base = target.scheme().cloned().zip(authority);
        Self {
            base,
            host: host_header(target),
        }
    }

    /// Origin-form target (authority-form for `CONNECT`) and a `Host`
    /// header, as hyper-util's legacy client sends without a proxy.
    pub(crate) fn http1<B>(&self, req: &mut Request<B>) {
        if !req.headers().contains_key(HOST) {
            let host = match req.uri().authority() {
                Some(_) => host_header(req.uri()),
                None => self.host.clone(),
            };
            if let Some(host) = host {
                req.headers_mut().insert(HOST, host);
            }
        }
        let uri = req.uri();
        if uri.authority().is_none() {
            return;
        }
        let mut parts = Parts::default();
        if req.method() == Method::CONNECT {
            parts.authority = uri.authority().cloned();
        } else {
            parts.path_and_query = Some(path_or_root(uri));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }

    /// A path-only request gets the target's scheme and authority.
    pub(crate) fn http2<B>(&self, req: &mut Request<B>) {
        let uri = req.uri();
        if req.method() == Method::CONNECT || uri.scheme().is_some() {
            return;
        }
        let Some((scheme, authority)) = &self.base else {
            return;
        };
        let mut parts = Parts::default();
        parts.scheme = Some(scheme.clone());
        parts.authority = Some(uri.authority().unwrap_or(authority).clone());
        parts.path_and_query = Some(path_or_root(uri));
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.base {
            // As everything redial prints of a target, so that no credential
            // reaches a log whatever `base` holds.
            Some((scheme, authority)) => Redacted(&format_args!("{scheme}://{authority}")).fmt(f),
            None => f.write_str("?"),
        }
    }
}

/// The authority without its userinfo: a credential, which HTTP/2 forbids
/// in `:authority` and which has no place in `Host` either.
fn without_userinfo(authority: &Authority) -> Option<Authority> {
    match authority.as_str().rsplit_once('@') {
        Some((_userinfo, host)) => host.parse().ok(),
        None => Some(authority.clone()),
    }
}

fn path_or_root(uri: &Uri) -> PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// `host[:port]`, the port only when it is not the scheme's default, as
/// hyper-util's legacy client writes it.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https" | "wss") => 443,
        _ => 80,
    };
    match uri.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(&format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    }
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(target: &str) -> Origin {
        Origin::new(&target.parse().unwrap())
    }

    fn request(method: Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    /// HTTP/1: a path-only request keeps its path and gets the target's
    /// host; an absolute one is cut to origin-form with its own host.
    #[test]
    fn http1_sends_origin_form_with_a_host() {
        let origin = origin("http://127.0.0.1:3000");

        let mut req = request(Method::GET, "/a?b=c");
        origin.http1(&mut req);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.headers()[HOST], "127.0.0.1:3000");

        let mut req = request(Method::GET, "http://example.com:80/x");
        origin.http1(&mut req);
        assert_eq!(req.uri(), "/x");
        assert_eq!(req.headers()[HOST], "example.com");

        let mut req = request(Method::GET, "http://example.com");
        req.headers_mut()
            .insert(HOST, HeaderValue::from_static("mine"));
        origin.http1(&mut req);
        assert_eq!(req.uri(), "/");
        assert_eq!(req.headers()[HOST], "mine");

        let mut req = request(Method::CONNECT, "example.com:443");
        origin.http1(&mut req);
        assert_eq!(req.uri(), "example.com:443");
    }

    /// HTTP/2: a path-only request gets the target's scheme and authority;
    /// an absolute one is left alone.
    #[test]
    fn http2_fills_in_scheme_and_authority() {
        let origin = origin("http://127.0.0.1:50051");

        let mut req = request(Method::POST, "/helloworld.Greeter/SayHello");
        origin.http2(&mut req);
        assert_eq!(
            req.uri(),
            "http://127.0.0.1:50051/helloworld.Greeter/SayHello"
        );

        let mut req = request(Method::GET, "https://example.com/x");
        origin.http2(&mut req);
        assert_eq!(req.uri(), "https://example.com/x");
        assert!(!req.headers().contains_key(HOST));
    }

    /// A target without scheme or authority fills in nothing, and nothing
    /// panics.
    #[test]
    fn odd_targets_fill_in_nothing() {
        let origin = origin("/just/a/path");
        let mut req = request(Method::GET, "/x");
        origin.http1(&mut req);
        origin.http2(&mut req);
        assert_eq!(req.uri(), "/x");
        assert!(!req.headers().contains_key(HOST));
    }

    /// Userinfo in the target, a credential, is neither sent nor printed.
    #[test]
    fn userinfo_is_neither_sent_nor_printed() {
        let origin = origin("http://user:token@127.0.0.1:1/");
        assert_eq!(format!("{origin:?}"), "http://127.0.0.1:1");

        let mut req = request(Method::GET, "/x");
        origin.http2(&mut req);
        assert_eq!(req.uri(), "http://127.0.0.1:1/x");

        let mut req = request(Method::GET, "/x");
        origin.http1(&mut req);
        assert_eq!(req.headers()[HOST], "127.0.0.1:1");
    }

    /// The default port of the scheme is left out of `Host`.
    #[test]
    fn host_header_leaves_out_default_ports() {
        let host = |uri: &str| host_header(&uri.parse().unwrap()).unwrap();
        assert_eq!(host("http://a:80/"), "a");
        assert_eq!(host("http://a:8080/"), "a:8080");
        assert_eq!(host("https://a:443/"), "a");
        assert_eq!(host("https://a:80/"), "a:80");
    }
}
