//! The one writer of a connection's state.

use std::sync::{atomic::Ordering, Arc};

use tokio::sync::watch;

use super::{aggregate::Membership, ConnectionState, ConnectionWatch, Edges, Phase};
use crate::backoff::Spread;

/// The one writer of a connection's state.
pub(crate) struct Publisher {
    tx: watch::Sender<ConnectionState>,
    edges: Arc<Edges>,
}

impl Publisher {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::Sender::new(ConnectionState::idle()),
            edges: Arc::new(Edges::new()),
        }
    }

    /// Makes this connection one of a pool's: the pool is told of every
    /// update from now on. A connection joins one pool, once.
    pub(super) fn join(&self, membership: Membership) {
        let _ = self.edges.pool.set(Box::new(membership));
    }

    /// A receiver of the state alone, for a pool's writer.
    pub(super) fn receiver(&self) -> watch::Receiver<ConnectionState> {
        self.tx.subscribe()
    }

    /// In a pool: this connection's place in the spread of the redials.
    pub(crate) fn spread(&self) -> Option<Spread> {
        self.edges.pool.get().and_then(|member| member.spread)
    }

    /// Tells the pool, if any, that this connection's state changed.
    fn tell_pool(&self) {
        if let Some(member) = self.edges.pool.get() {
            member.aggregate.refresh();
        }
    }

    pub(crate) fn watch(&self) -> ConnectionWatch {
        ConnectionWatch {
            rx: self.tx.subscribe(),
            edges: self.edges.clone(),
        }
    }

    /// Applies `update`, waking subscribers only when the phase changed.
    pub(crate) fn update(&self, update: impl FnOnce(&mut ConnectionState)) {
        let mut before = None;
        self.tx.send_if_modified(|state| {
            let was = state.phase;
            update(state);
            if state.phase == was {
                return false;
            }
            self.edges.phase.store(state.phase as u8, Ordering::Release);
            before = Some(was);
            true
        });
        if let Some(before) = before {
            self.notify(before);
        }
        self.tell_pool();
    }

    /// Wakes the waiters of the edge from `before` to the phase now.
    fn notify(&self, before: Phase) {
        let now = self.edges.phase();
        if matches!(now, Phase::Connected | Phase::Closed) {
            self.edges.up_or_closed.notify_waiters();
        }
        if before == Phase::Connected {
            self.edges.down.notify_waiters();
        }
    }

    /// Applies `update` and wakes subscribers, though the phase stays: for
    /// an event they must see (a connection replaced by a new one).
    pub(crate) fn announce(&self, update: impl FnOnce(&mut ConnectionState)) {
        self.tx.send_modify(update);
        self.tell_pool();
    }

    pub(crate) fn state(&self) -> watch::Ref<'_, ConnectionState> {
        self.tx.borrow()
    }
}

impl Drop for Publisher {
    /// Publishes `Closed` exactly once, before the sender goes away.
    fn drop(&mut self) {
        let mut before = None;
        self.tx.send_if_modified(|state| {
            if state.phase == Phase::Closed {
                return false;
            }
            if state.phase == Phase::Connected {
                state.disconnects += 1;
            }
            before = Some(state.phase);
            state.phase = Phase::Closed;
            state.retry_at = None;
            self.edges
                .phase
                .store(Phase::Closed as u8, Ordering::Release);
            true
        });
        if let Some(before) = before {
            self.notify(before);
        }
        self.tell_pool();
    }
}
