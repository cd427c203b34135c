//! The connectors' keep-alive settings: HTTP/2 pings on [`Http2Connector`].

use std::time::Duration;

use super::{connector::Http2Connector, ping::Pings};

// ===== HTTP/2 pings =====

impl<B, C> Http2Connector<B, C> {
    /// Sends an HTTP/2 `PING` every `interval`, also while no request is
    /// open, and closes the connection when a `PING` goes unanswered for
    /// `timeout`.
    ///
    /// A connection whose peer went silent without closing it (a frozen
    /// proxy or load balancer, a host gone, a NAT entry dropped) is then
    /// noticed within `interval + timeout`: its `poll_ready` fails with
    /// [`ConnectionClosed`](super::ConnectionClosed), whose message says
    /// `keep-alive timed out`
    /// ([`is_keep_alive_timeout`](super::ConnectionClosed::is_keep_alive_timeout)),
    /// and [`Reconnect`](crate::Reconnect) dials again by its usual rules.
    /// A request in flight on it fails with hyper's timeout error and is not
    /// resent. Without pings such a connection looks open until the
    /// operating system gives up on it, which for an idle one is never.
    ///
    /// A server that finds the pings too frequent answers with `GOAWAY
    /// ENHANCE_YOUR_CALM` (gRPC servers add `too_many_pings`): the
    /// connection closes, and the next one pings at twice the interval the
    /// closed one used (gRFC A8), for every clone of this connector; a
    /// warning says so. [`keep_alive_interval`](Self::keep_alive_interval)
    /// tells the current interval. See the module docs'
    /// [Keep-alive](super#keep-alive) section for values that suit gRPC
    /// servers.
    ///
    /// hyper runs the pings on tokio's timer (hyper-util's `TokioTimer`).
    /// This replaces any keep-alive settings given in
    /// [`hyper_builder`](Self::hyper_builder), whichever is called first.
    /// An interval under 1 ms counts as 1 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use redial::http::Http2Connector;
    ///
    /// let connector = Http2Connector::<Empty<Bytes>>::new()
    ///     .keep_alive(Duration::from_secs(30), Duration::from_secs(10));
    /// assert_eq!(connector.keep_alive_interval(), Some(Duration::from_secs(30)));
    /// ```
    ///
    /// Default is no pings, as in gRPC.
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.settings_mut().set_pings(Pings::new(interval, timeout));
        self
    }

    /// The interval at which the next connection will ping: the one given
    /// to [`keep_alive`](Self::keep_alive), doubled after each
    /// `too_many_pings`; `None` without keep-alive pings. Clones of the
    /// connector share it.
    pub fn keep_alive_interval(&self) -> Option<Duration> {
        self.settings().pings().map(Pings::interval)
    }
}
