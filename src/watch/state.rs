//! What the watch publishes: [`Phase`] and [`ConnectionState`].

use std::{error::Error, fmt};

use tokio::time::Instant;

use crate::error::Cause;

/// Where a connection stands. See [`ConnectionState::phase`].
///
/// The phases follow gRPC's connectivity states: `Idle`, `Connecting`,
/// `Connected` (gRPC's READY), `Disconnected` (TRANSIENT_FAILURE, and just
/// as sticky) and `Closed` (SHUTDOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// No connection and no attempt: nothing has asked for one yet, or the
    /// connection was closed for idleness
    /// ([`idle_timeout`](crate::ReconnectLayer::idle_timeout)) and no
    /// request has asked for a new one since. The next request connects.
    Idle = 0,
    /// The first attempt is running (or the first one after a healthy
    /// connection was lost). Requests wait for it.
    Connecting,
    /// Connected; requests go to the connection.
    Connected = 2,
    /// The last attempt failed or the connection was lost. Sticky: reported
    /// until the service is `Connected` again, while further attempts run
    /// and [`attempt`](ConnectionState::attempt) rises. Requests fail fast
    /// with [`Unavailable`](crate::error::Unavailable), or wait in
    /// wait-for-ready mode.
    Disconnected = 3,
    /// Terminal: the service was dropped or gave up. Nothing leaves it.
    Closed = 4,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Idle => "idle",
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Disconnected => "disconnected",
            Phase::Closed => "closed",
        })
    }
}

/// One snapshot of a connection: phase, attempt, last error, next retry
/// time and counters. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionState {
    pub(crate) phase: Phase,
    pub(crate) attempt: u32,
    pub(crate) last_error: Option<Cause>,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) connects: u64,
    pub(crate) disconnects: u64,
    pub(crate) resent: u64,
    pub(crate) idle_closes: u64,
    pub(crate) replaced: u64,
}

impl ConnectionState {
    pub(super) const fn idle() -> Self {
        Self {
            phase: Phase::Idle,
            attempt: 0,
            last_error: None,
            retry_at: None,
            connects: 0,
            disconnects: 0,
            resent: 0,
            idle_closes: 0,
            replaced: 0,
        }
    }

    /// The phase the connection is in.
    pub const fn phase(&self) -> Phase {
        self.phase
    }

    /// `true` when the phase is [`Phase::Connected`].
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// `true` when the phase is [`Phase::Closed`]: the service was closed
    /// or dropped, or gave up. Nothing leaves that phase.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The number of the current (or last) connect attempt, counting from 1
    /// since the last healthy connection; 0 before the first.
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Why the service is not connected: the failure of the last attempt, or
    /// what took the connection away. `None` while connected and before the
    /// first failure.
    pub fn last_error(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.last_error.as_deref()
    }

    /// When the next connect attempt is due, while
    /// [`Disconnected`](Phase::Disconnected) and waiting; `None` while an
    /// attempt runs, while connected, and once closed.
    ///
    /// The attempt starts at this time to within tokio's timer resolution
    /// (a millisecond): its timer is armed just under a millisecond early,
    /// since tokio's timer otherwise fires up to ~2 ms late, so an attempt
    /// may start up to 1 ms before `retry_at`. A lazy
    /// [`Reconnect`](crate::Reconnect) starts it on its first `poll_ready`
    /// from then on.
    pub const fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// How many times a connection was established.
    pub const fn connects(&self) -> u64 {
        self.connects
    }

    /// How many times an established connection went away (lost, marked
    /// disconnected, or dropped when the service closed). Idle closes are
    /// not counted here but in [`idle_closes`](Self::idle_closes), nor
    /// connections replaced for their age, in [`replaced`](Self::replaced).
    pub const fn disconnects(&self) -> u64 {
        self.disconnects
    }

    /// How many times the connection was closed on purpose because no
    /// request was in flight for the
    /// [`idle_timeout`](crate::ReconnectLayer::idle_timeout). Every
    /// connection made ends in one of three counters or is the one up now:
    /// `connects == disconnects + idle_closes + replaced` (+ 1 while
    /// connected).
    pub const fn idle_closes(&self) -> u64 {
        self.idle_closes
    }

    /// How many connections were replaced by a new one because they reached
    /// the [`max_connection_age`](crate::ReconnectLayer::max_connection_age).
    /// The new one was made first, so the phase stayed `Connected`.
    pub const fn replaced(&self) -> u64 {
        self.replaced
    }

    /// How many requests a connection handed back (see
    /// [`Resend`](crate::error::Resend)) and the shared handle sent again
    /// on a new connection.
    pub const fn resent(&self) -> u64 {
        self.resent
    }
}

impl fmt::Debug for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionState")
            .field("phase", &self.phase)
            .field("attempt", &self.attempt)
            .field(
                "last_error",
                &self.last_error.as_ref().map(|e| e.to_string()),
            )
            .field("retry_at", &self.retry_at)
            .field("connects", &self.connects)
            .field("disconnects", &self.disconnects)
            .field("resent", &self.resent)
            .field("idle_closes", &self.idle_closes)
            .field("replaced", &self.replaced)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHASES: [Phase; 5] = [
        Phase::Idle,
        Phase::Connecting,
        Phase::Connected,
        Phase::Disconnected,
        Phase::Closed,
    ];

    /// Logs and error messages print a phase as one lower-case word.
    #[test]
    fn a_phase_displays_as_a_lower_case_word() {
        let shown: Vec<String> = PHASES.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["idle", "connecting", "connected", "disconnected", "closed"]
        );
    }

    /// `is_connected` and `is_closed` each hold in their one phase only.
    #[test]
    fn is_connected_and_is_closed_hold_in_their_phase_only() {
        for phase in PHASES {
            let state = ConnectionState {
                phase,
                ..ConnectionState::idle()
            };
            assert_eq!(state.is_connected(), phase == Phase::Connected, "{phase}");
            assert_eq!(state.is_closed(), phase == Phase::Closed, "{phase}");
        }
    }
}
