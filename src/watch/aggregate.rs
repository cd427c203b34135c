//! Many connections seen as one: the state a [`Pool`](crate::Pool)'s watch
//! publishes, worked out from its connections' states by gRPC's rule.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::Waker,
};

use tokio::{sync::watch, time::Instant};

use super::{ConnectionState, ConnectionWatch, Phase, Publisher};
use crate::{backoff::Spread, error::Cause};

/// What a connection of a pool keeps of it, in its watch's shared part
/// (the connection's own state machine is no bigger for it): the pool's
/// writer, and the connection's place in the spread of the redials.
pub(crate) struct Membership {
    pub(super) aggregate: Arc<Aggregate>,
    /// `None` for a pool that is one endpoint of many.
    pub(super) spread: Option<Spread>,
}

/// The writer of a pool's watch. Each connection's [`Publisher`] holds it
/// and calls [`refresh`](Self::refresh) after every update it publishes,
/// so the pool's state is worked out again at each change, by whoever made
/// it, with no task to wake: the transition that changed a connection
/// returns only once the pool's watch shows the change too.
pub(crate) struct Aggregate {
    publisher: Publisher,
    members: Mutex<Members>,
    /// Closed as a whole (the pool's `close`, or its last handle gone):
    /// the phase goes straight to `Closed` once the last connection has
    /// closed, not through whatever the others show on their way there.
    closing: AtomicBool,
    /// No member can join any more (the source of endpoints ended): with
    /// none left, the phase is `Closed`.
    ended: AtomicBool,
    /// Called when no member is up and a member's attempt failed: asks
    /// the source of endpoints for a fresh look.
    on_none_up: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

/// The connections' states, and the causes last seen on them. Receivers
/// only, not whole watches: a connection's watch holds its membership, so
/// holding the watch here would make a cycle.
struct Members {
    /// The tasks waiting for a connection to come up (a pool's `poll_ready`
    /// in wait-for-ready mode), woken when one does or all close.
    waiters: Vec<Waker>,
    list: Vec<Member>,
    seen: u64,
    /// The counters of members that left, so that the sums never go back.
    departed: ConnectionState,
}

/// One connection (or one endpoint's pool) as the aggregate sees it.
struct Member {
    watch: watch::Receiver<ConnectionState>,
    /// Its `last_error` as last seen, and the order in which it was first
    /// seen: the aggregate shows the newest.
    cause: (Option<Cause>, u64),
    /// Removed (an endpoint gone from discovery): its phase no longer
    /// counts, its counters do until it has closed, so that the sums keep
    /// `connects == disconnects + idle_closes + replaced (+ those up)`.
    left: bool,
}

impl Member {
    fn new(watch: watch::Receiver<ConnectionState>) -> Self {
        Self {
            watch,
            cause: (None, 0),
            left: false,
        }
    }
}

/// Adds `state`'s counters to `sum`'s.
fn add_counters(sum: &mut ConnectionState, state: &ConnectionState) {
    sum.connects += state.connects;
    sum.disconnects += state.disconnects;
    sum.resent += state.resent;
    sum.idle_closes += state.idle_closes;
    sum.replaced += state.replaced;
}

impl Aggregate {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            publisher: Publisher::new(),
            members: Mutex::new(Members {
                waiters: Vec::new(),
                list: Vec::new(),
                seen: 0,
                departed: ConnectionState::idle(),
            }),
            closing: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            on_none_up: Mutex::new(None),
        })
    }

    /// Adds the connection `publisher` writes for, at `spread`: from now on
    /// every update it publishes refreshes the pool's state.
    pub(crate) fn join(self: &Arc<Self>, publisher: &Publisher, spread: Spread) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.list.push(Member::new(publisher.receiver()));
        drop(members);
        publisher.join(Membership {
            aggregate: self.clone(),
            spread: Some(spread),
        });
        self.refresh();
    }

    /// Adds a whole pool (one endpoint of many) as one member: from now on
    /// every update of the pool's watch refreshes this one.
    pub(crate) fn join_pool(self: &Arc<Self>, pool: &Aggregate) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.list.push(Member::new(pool.publisher.receiver()));
        drop(members);
        pool.publisher.join(Membership {
            aggregate: self.clone(),
            spread: None,
        });
        self.refresh();
    }

    /// Removes a pool added with [`join_pool`](Self::join_pool): its phase
    /// no longer counts; its counters do, up to its close.
    pub(crate) fn leave(&self, pool: &Aggregate) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let gone = pool.publisher.receiver();
        for member in members.list.iter_mut() {
            if member.watch.same_channel(&gone) {
                member.left = true;
            }
        }
        drop(members);
        self.refresh();
    }

    /// No member will join any more: with none left, the phase is `Closed`.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.refresh();
    }

    /// Calls `hook` whenever no member is up and one of them has just
    /// failed, in place of the hook set before.
    pub(crate) fn on_none_up(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        *self
            .on_none_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    pub(crate) fn watch(&self) -> ConnectionWatch {
        self.publisher.watch()
    }

    /// The pool is closing as a whole: from now on its phase stays as it
    /// is until every connection has closed, then becomes `Closed`.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Wakes `waker` the next time a connection is up or all are closed.
    /// Check again after: one may have come up before this call.
    pub(crate) fn wake_when_up(&self, waker: &Waker) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if !members.waiters.iter().any(|w| w.will_wake(waker)) {
            members.waiters.push(waker.clone());
        }
    }

    /// Works the pool's state out again from its connections' and publishes
    /// it (waking subscribers only when the phase changed, as any watch).
    ///
    /// | the connections | the pool |
    /// |---|---|
    /// | any `Connected` | `Connected` |
    /// | else any `Connecting` | `Connecting` |
    /// | else any `Idle` | `Idle` |
    /// | else any `Disconnected` | `Disconnected`: `retry_at` the earliest, `None` while one of them is attempting |
    /// | all `Closed` | `Closed` |
    /// | closing as a whole, some not `Closed` yet | as before |
    ///
    /// `last_error` is the newest of the causes the connections show (none
    /// while connected), `attempt` the highest, and the counters are sums.
    /// Subscribers are woken when the phase changes, and when a connection
    /// was replaced at its maximum age.
    pub(crate) fn refresh(&self) {
        let mut guard = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let members = &mut *guard;
        // Members that left and have closed count no more than their sums.
        let Members { list, departed, .. } = members;
        list.retain(|member| {
            let state = member.watch.borrow();
            let gone = member.left && state.phase == Phase::Closed;
            if gone {
                add_counters(departed, &state);
            }
            !gone
        });
        let mut next = ConnectionState::idle();
        add_counters(&mut next, &members.departed);
        let mut seen = [false; 5];
        let mut retry_at: Option<Instant> = None;
        let mut attempting = false;
        // Any member not removed.
        let mut live = false;
        let mut left_open = false;
        for member in members.list.iter_mut() {
            let state = member.watch.borrow();
            add_counters(&mut next, &state);
            if member.left {
                left_open = true;
                continue;
            }
            live = true;
            let cause = &mut member.cause;
            seen[state.phase as usize] = true;
            next.attempt = next.attempt.max(state.attempt);
            if state.phase == Phase::Disconnected {
                match state.retry_at {
                    Some(at) => retry_at = Some(retry_at.map_or(at, |r| r.min(at))),
                    None => attempting = true,
                }
            }
            if !same_cause(state.last_error.as_ref(), cause.0.as_ref()) {
                members.seen += 1;
                *cause = (state.last_error.clone(), members.seen);
            }
        }
        next.phase = [
            Phase::Connected,
            Phase::Connecting,
            Phase::Idle,
            Phase::Disconnected,
        ]
        .into_iter()
        .find(|phase| seen[*phase as usize])
        .unwrap_or(Phase::Closed);
        if !live && !self.closing.load(Ordering::Acquire) && !self.ended.load(Ordering::Acquire) {
            // No endpoint known yet (or none left): looking for one.
            next.phase = Phase::Connecting;
        }
        let closing = self.closing.load(Ordering::Acquire);
        // Closing, the phase waits for the last member; and it is not
        // `Closed` while a removed one is still closing.
        if (next.phase != Phase::Closed && closing) || (next.phase == Phase::Closed && left_open) {
            // The counters move; the phase stays.
            let now = self.publisher.state();
            next.phase = now.phase;
            next.last_error = now.last_error.clone();
            next.retry_at = now.retry_at;
            drop(now);
            self.publisher.update(|state| *state = next);
            drop(guard);
            return;
        }
        if next.phase != Phase::Connected {
            // The newest cause: each was stamped with the next number when
            // it first showed.
            next.last_error = members
                .list
                .iter()
                .filter(|member| !member.left)
                .filter_map(|member| Some((member.cause.1, member.cause.0.as_ref()?)))
                .max_by_key(|(order, _)| *order)
                .map(|(_, cause)| cause.clone());
        }
        if next.phase == Phase::Disconnected && !attempting {
            next.retry_at = retry_at;
        }
        let woken = match next.phase {
            Phase::Connected | Phase::Closed => std::mem::take(&mut members.waiters),
            _ => Vec::new(),
        };
        let none_up = next.phase == Phase::Disconnected && {
            let before = self.publisher.state();
            before.phase != Phase::Disconnected
                || !same_cause(before.last_error.as_ref(), next.last_error.as_ref())
        };
        // A connection replaced at its age wakes the pool's subscribers
        // too, as it wakes its own.
        if next.replaced > self.publisher.state().replaced {
            self.publisher.announce(|state| *state = next);
        } else {
            self.publisher.update(|state| *state = next);
        }
        drop(guard);
        woken.into_iter().for_each(Waker::wake);
        if none_up {
            let hook = self
                .on_none_up
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(hook) = hook {
                hook();
            }
        }
    }
}

fn same_cause(a: Option<&Cause>, b: Option<&Cause>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(aggregate: &Arc<Aggregate>, index: usize, phase: Phase) -> Publisher {
        let publisher = Publisher::new();
        aggregate.join(&publisher, Spread::new(index, 2));
        publisher.update(|state| state.phase = phase);
        publisher
    }

    /// Closed as a whole, the pool goes from what it showed straight to
    /// `Closed`, not through the phases of the connections still closing.
    #[test]
    fn a_pool_closed_as_a_whole_goes_straight_to_closed() {
        let aggregate = Aggregate::new();
        let up = member(&aggregate, 0, Phase::Connected);
        let dialling = member(&aggregate, 1, Phase::Connecting);
        let watch = aggregate.watch();
        assert_eq!(watch.phase(), Phase::Connected);

        aggregate.close();
        drop(up);
        assert_eq!(watch.phase(), Phase::Connected);
        assert_eq!(watch.state().disconnects(), 1, "the counters still move");
        drop(dialling);
        assert_eq!(watch.phase(), Phase::Closed);
    }

    /// Not closed as a whole, the pool shows the connections left.
    #[test]
    fn a_connection_closing_alone_shows_the_others() {
        let aggregate = Aggregate::new();
        let up = member(&aggregate, 0, Phase::Connected);
        let _dialling = member(&aggregate, 1, Phase::Connecting);
        drop(up);
        assert_eq!(aggregate.watch().phase(), Phase::Connecting);
    }

    fn cause(text: &'static str) -> Cause {
        Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(text))
    }

    /// `member` fails with `text`, and waits for its retry.
    fn fail(member: &Publisher, text: &'static str) {
        member.update(|state| {
            state.phase = Phase::Disconnected;
            state.last_error = Some(cause(text));
            state.retry_at = Some(Instant::now());
        });
    }

    fn shown(aggregate: &Aggregate) -> String {
        let state = aggregate.watch().state();
        state
            .last_error()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// Down, the pool shows the cause that came last, whichever connection
    /// it came from.
    #[tokio::test(start_paused = true)]
    async fn the_newest_cause_is_shown_from_any_connection() {
        let aggregate = Aggregate::new();
        let first = member(&aggregate, 0, Phase::Connected);
        let second = member(&aggregate, 1, Phase::Connected);
        fail(&first, "first down");
        fail(&second, "second down");
        assert_eq!(aggregate.watch().phase(), Phase::Disconnected);
        assert_eq!(shown(&aggregate), "second down");
        fail(&first, "first again");
        assert_eq!(shown(&aggregate), "first again");
    }

    /// A removed endpoint's cause is not shown, though it came last.
    #[tokio::test(start_paused = true)]
    async fn a_removed_endpoints_cause_is_not_shown() {
        let outer = Aggregate::new();
        let (kept, removed) = (Aggregate::new(), Aggregate::new());
        let kept_member = member(&kept, 0, Phase::Connected);
        let removed_member = member(&removed, 0, Phase::Connected);
        outer.join_pool(&kept);
        outer.join_pool(&removed);
        fail(&kept_member, "kept down");
        fail(&removed_member, "removed down");
        assert_eq!(shown(&outer), "removed down");
        outer.leave(&removed);
        assert_eq!(outer.watch().phase(), Phase::Disconnected);
        assert_eq!(shown(&outer), "kept down");
    }

    /// The none-up hook runs when the last connection up fails and at each
    /// new failure after, not when a connection down starts its next
    /// attempt or its counters move.
    #[tokio::test(start_paused = true)]
    async fn the_none_up_hook_runs_once_per_failure_with_none_up() {
        let aggregate = Aggregate::new();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        aggregate.on_none_up(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let count = || calls.load(Ordering::SeqCst);
        let first = member(&aggregate, 0, Phase::Connected);
        let second = member(&aggregate, 1, Phase::Connected);
        fail(&first, "first down");
        assert_eq!(count(), 0, "one is still up");
        fail(&second, "second down");
        assert_eq!(count(), 1, "none is up");

        // Attempting again: no retry time, the same cause.
        first.update(|state| {
            state.retry_at = None;
            state.attempt += 1;
        });
        second.update(|state| state.disconnects += 1);
        assert_eq!(aggregate.watch().phase(), Phase::Disconnected);
        assert_eq!(count(), 1, "nothing failed since");

        fail(&first, "first again");
        assert_eq!(count(), 2, "a new failure");
    }

    /// An endpoint removed while its pool still has a connection open keeps
    /// the whole from `Closed` until that pool has closed, and its close is
    /// counted: `connects == disconnects` at the end.
    #[test]
    fn a_removed_endpoint_still_closing_keeps_the_whole_open() {
        let outer = Aggregate::new();
        let pool = Aggregate::new();
        let up = member(&pool, 0, Phase::Connected);
        up.update(|state| state.connects = 1);
        outer.join_pool(&pool);
        assert_eq!(outer.watch().phase(), Phase::Connected);

        outer.leave(&pool);
        outer.close();
        outer.end();
        let watch = outer.watch();
        assert_ne!(watch.phase(), Phase::Closed, "a connection is still open");
        drop(up);
        assert_eq!(watch.phase(), Phase::Closed);
        assert_eq!(
            (watch.state().connects(), watch.state().disconnects()),
            (1, 1)
        );
    }
}
