//! Which connection a request goes to: the least loaded of those up, load
//! being the requests in flight (tower's `PendingRequests`).

use std::sync::Arc;

use crate::{backoff::Rng, ConnectionWatch, Phase, Shared};

/// What every clone of a pool shares to choose with: each connection's
/// watch, and a count of its requests in flight.
struct Members {
    watches: Box<[ConnectionWatch]>,
    /// One per connection. Each response future holds a clone until it
    /// resolves, so a connection's requests in flight (queued or sent) are
    /// its `Arc`'s count beyond this one: tower's `PendingRequests`.
    loads: Box<[Arc<()>]>,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Choice {
    /// To this connection, which is up.
    Up(usize),
    /// None is up: to this one, expected up first, in this phase.
    Down(usize, Phase),
}

/// One clone's chooser: the shared members and where its next look starts.
pub(super) struct Picker {
    members: Arc<Members>,
    /// Starts at random, so that clones do not all start their turns at
    /// the first connection.
    next: usize,
}

impl Picker {
    pub(super) fn new(watches: Vec<ConnectionWatch>) -> Self {
        let loads = watches.iter().map(|_| Arc::new(())).collect();
        Self {
            members: Arc::new(Members {
                watches: watches.into(),
                loads,
            }),
            next: Rng::new().below(usize::MAX),
        }
    }

    pub(super) fn watches(&self) -> &[ConnectionWatch] {
        &self.members.watches
    }

    /// A share of connection `i`'s load, for a request sent to it.
    pub(super) fn load(&self, i: usize) -> Arc<()> {
        self.members.loads[i].clone()
    }

    /// The requests in flight on all the connections.
    pub(super) fn total_in_flight(&self) -> usize {
        (0..self.members.loads.len())
            .map(|i| self.in_flight(i))
            .sum()
    }

    fn in_flight(&self, i: usize) -> usize {
        Arc::strong_count(&self.members.loads[i]) - 1
    }

    fn is_up<Req, F>(&self, i: usize, handles: &[Shared<Req, F>]) -> bool {
        self.members.watches[i].phase_unlocked() == Phase::Connected && !handles[i].is_closed()
    }

    pub(super) fn any_up<Req, F>(&self, handles: &[Shared<Req, F>]) -> bool {
        (0..handles.len()).any(|i| self.is_up(i, handles))
    }

    /// Whether a slot reserved on connection `i` may still be used: it is
    /// up, or none is and it is not closed.
    pub(super) fn still_fits<Req, F>(&self, i: usize, handles: &[Shared<Req, F>]) -> bool {
        self.is_up(i, handles) || (!handles[i].is_closed() && !self.any_up(handles))
    }

    /// The connection for the next request: of those up, the one with the
    /// fewest requests in flight, the first found from this turn's start on
    /// among equals; with none up, [`fallback`](Self::fallback); `None`
    /// once all are closed.
    pub(super) fn pick<Req, F>(&mut self, handles: &[Shared<Req, F>]) -> Option<Choice> {
        let n = handles.len();
        // Among equals the connections take turns: each look starts just
        // after the connection chosen last.
        let start = self.next % n;
        let mut best: Option<(usize, usize)> = None;
        for i in (start..n).chain(0..start) {
            if !self.is_up(i, handles) {
                continue;
            }
            let load = self.in_flight(i);
            if best.is_none_or(|(least, _)| load < least) {
                best = Some((load, i));
                if load == 0 {
                    // None can be lighter: on a quiet pool, a look costs
                    // about one connection's phase and count.
                    break;
                }
            }
        }
        let chosen = match best {
            Some((_, i)) => Some(Choice::Up(i)),
            None => self.fallback(handles, start),
        };
        if let Some(Choice::Up(i) | Choice::Down(i, _)) = chosen {
            self.next = i + 1;
        }
        chosen
    }

    /// With none up, the connection expected up first: one connecting,
    /// else an idle one (a request wakes it), else the one whose retry is
    /// due first (or running); the least loaded among equals, and the first
    /// from `start` on among those.
    fn fallback<Req, F>(&self, handles: &[Shared<Req, F>], start: usize) -> Option<Choice> {
        let n = handles.len();
        let mut best = None;
        for i in (start..n).chain(0..start) {
            if handles[i].is_closed() {
                continue;
            }
            let state = self.members.watches[i].state();
            let phase = match state.phase() {
                // Never connected nor closed for idleness: the eager task
                // has not run yet, and will dial without a request.
                Phase::Idle if state.connects() == 0 && state.idle_closes() == 0 => {
                    Phase::Connecting
                }
                phase => phase,
            };
            let key = match phase {
                Phase::Connected | Phase::Connecting => (0, None),
                Phase::Idle => (1, None),
                Phase::Disconnected => (2, state.retry_at()),
                _ => continue,
            };
            let key = (key.0, key.1, self.in_flight(i));
            if best.as_ref().is_none_or(|(best, _, _)| key < *best) {
                best = Some((key, i, phase));
            }
        }
        best.map(|(_, i, phase)| Choice::Down(i, phase))
    }
}

impl Clone for Picker {
    fn clone(&self) -> Self {
        Self {
            members: self.members.clone(),
            next: Rng::new().below(usize::MAX),
        }
    }
}
