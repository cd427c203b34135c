//! The connectors' keep-alive settings: HTTP/2 pings on [`Http2Connector`],
//! and TCP keep-alive and `TCP_USER_TIMEOUT` on both connectors when they
//! dial with hyper-util's [`HttpConnector`]. When to use which is in the
//! module docs' "Keep-alive" section.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;

use super::{
    connector::{Http1Connector, Http2Connector},
    ping::Pings,
};

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
    /// A gRPC server that finds the pings too frequent answers with `GOAWAY
    /// ENHANCE_YOUR_CALM` and the debug data `too_many_pings`: the
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

// ===== TCP =====

// The same two setters on both connectors, each a one-line call into
// hyper-util's `HttpConnector`.
macro_rules! tcp_settings {
    ($connector:ident) => {
        impl<B> $connector<B, HttpConnector> {
            /// Turns on TCP keep-alive (`SO_KEEPALIVE`) on each socket,
            /// with the first probe after `idle` without traffic.
            ///
            /// The kernel then probes an idle connection and closes it when
            /// the probes go unanswered, so a peer host that vanished is
            /// noticed without a request. It is slow and coarse: the probes'
            /// spacing and count are the system's (on Linux 75 s and 9, so
            /// about 11 minutes after `idle`) unless you set them through
            /// [`get_mut`](Self::get_mut) (`set_keepalive_interval`,
            /// `set_keepalive_retries`), and it sees only the next TCP hop: a
            /// proxy answers the probes itself, and a server whose host is
            /// up but whose process hangs answers them too. Use it for
            /// HTTP/1, which has no pings of its own; for HTTP/2, prefer
            /// [`Http2Connector::keep_alive`]. See the module docs'
            /// [Keep-alive](super#keep-alive) section.
            ///
            /// ```
            /// use std::time::Duration;
            /// use http_body_util::Empty;
            /// use hyper::body::Bytes;
            #[doc = concat!("use redial::http::", stringify!($connector), ";")]
            ///
            #[doc = concat!("let connector = ", stringify!($connector), "::<Empty<Bytes>>::new()")]
            ///     .tcp_keepalive(Duration::from_secs(60));
            /// # let _ = connector;
            /// ```
            ///
            /// Default is off: no TCP keep-alive probes.
            pub fn tcp_keepalive(mut self, idle: Duration) -> Self {
                self.get_mut().set_keepalive(Some(idle));
                self
            }

            /// Sets `TCP_USER_TIMEOUT` on each socket: the kernel closes the
            /// connection when data it sent stays unacknowledged for
            /// `timeout`.
            ///
            /// Without it, Linux retransmits for about 15 minutes before it
            /// gives up, so a request written to a peer that vanished can
            /// hang that long; with it, the connection fails after
            /// `timeout`, and `Reconnect` dials again. It bounds unanswered
            /// TCP keep-alive probes too. Like TCP keep-alive it sees only
            /// the next TCP hop, not a proxy's far side. Set it above the
            /// longest stall the network may have, or a slow but live peer
            /// loses its connection. Only on Linux, Android and Fuchsia.
            ///
            /// ```
            /// use std::time::Duration;
            /// use http_body_util::Empty;
            /// use hyper::body::Bytes;
            #[doc = concat!("use redial::http::", stringify!($connector), ";")]
            ///
            #[doc = concat!("let connector = ", stringify!($connector), "::<Empty<Bytes>>::new()")]
            ///     .tcp_user_timeout(Duration::from_secs(30));
            /// # let _ = connector;
            /// ```
            ///
            /// Default is the system's: unset.
            #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
            #[cfg_attr(
                docsrs,
                doc(cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux")))
            )]
            pub fn tcp_user_timeout(mut self, timeout: Duration) -> Self {
                self.get_mut().set_tcp_user_timeout(Some(timeout));
                self
            }
        }
    };
}

tcp_settings!(Http1Connector);
tcp_settings!(Http2Connector);
