//! loom models of the one piece of synchronisation the shared handle has of
//! its own: the signal by which handles ask the worker task to reset its
//! backoff or to close (`src/shared/signal.rs`, compiled here over loom's
//! atomics and mutex). Everything else the handle uses is tokio's or std's.
//!
//! A lost wake-up shows as a deadlock, which loom reports as a failure, in
//! any of the interleavings it explores.

use std::{
    future::poll_fn,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc as StdArc,
    },
    task::{Context, Poll, Wake, Waker},
};

use loom::{sync::Arc, thread};

/// The primitives `signal.rs` takes from its parent module.
mod sync {
    pub(crate) use loom::sync::{
        atomic::{AtomicU8, Ordering},
        Mutex,
    };
}

#[path = "../src/shared/signal.rs"]
#[allow(dead_code, unreachable_pub)]
mod signal;

use signal::{Signal, CLOSE, RESET_BACKOFF};

/// Explores `f`'s interleavings with up to three preemptions per execution
/// (loom's advice: bugs need few), which keeps the three-thread model to
/// seconds; `LOOM_MAX_PREEMPTIONS` overrides it.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Runs the worker's side until it has seen every bit of `want`; returns
/// what it saw.
fn worker(signal: &Signal, want: u8) -> u8 {
    let mut registered: Option<Waker> = None;
    let mut seen = 0;
    loom::future::block_on(poll_fn(|cx| {
        seen |= signal.take(&mut registered, cx);
        if seen & want == want {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    seen
}

/// A close sent from another thread always wakes the worker, whether it
/// comes before, during or after the worker registers.
#[test]
fn a_close_always_reaches_the_worker() {
    model(|| {
        let signal = Arc::new(Signal::default());
        let handle = signal.clone();
        let sender = thread::spawn(move || handle.send(CLOSE));
        assert_eq!(worker(&signal, CLOSE), CLOSE);
        sender.join().unwrap();
    });
}

/// Two handles signalling at once: the worker sees both requests, none is
/// lost to the other's wake-up.
#[test]
fn two_senders_are_both_seen() {
    model(|| {
        let signal = Arc::new(Signal::default());
        let (a, b) = (signal.clone(), signal.clone());
        let reset = thread::spawn(move || a.send(RESET_BACKOFF));
        let close = thread::spawn(move || b.send(CLOSE));
        assert_eq!(
            worker(&signal, RESET_BACKOFF | CLOSE),
            RESET_BACKOFF | CLOSE
        );
        reset.join().unwrap();
        close.join().unwrap();
    });
}

/// Whether some execution of the model below saw the worker take the two
/// signals in two wake-ups (the case its name is about), rather than both
/// at once.
static TOOK_THEM_APART: AtomicBool = AtomicBool::new(false);

/// A signal sent after the worker has already taken one, while it waits
/// again with its waker still registered, wakes it a second time; and loom
/// does reach that interleaving.
#[test]
fn a_second_signal_wakes_a_worker_that_already_took_one() {
    model(|| {
        let signal = Arc::new(Signal::default());
        let handle = signal.clone();
        let sender = thread::spawn(move || {
            handle.send(RESET_BACKOFF);
            handle.send(CLOSE);
        });
        let mut registered: Option<Waker> = None;
        let mut seen = 0;
        let mut takes_with_bits = 0;
        loom::future::block_on(poll_fn(|cx| {
            let bits = signal.take(&mut registered, cx);
            if bits != 0 {
                takes_with_bits += 1;
            }
            seen |= bits;
            if seen & CLOSE != 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        assert_eq!(seen, RESET_BACKOFF | CLOSE, "the reset was not lost");
        if takes_with_bits == 2 {
            TOOK_THEM_APART.store(true, Relaxed);
        }
        sender.join().unwrap();
    });
    assert!(
        TOOK_THEM_APART.load(Relaxed),
        "no execution had the worker wait between the two signals"
    );
}

/// Counts the wake-ups of a task, outside loom's model.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &StdArc<Self>) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// Unregistering, even while a handle signals, leaves no waker behind: the
/// signal holds no clone of it, and a later send wakes nothing.
#[test]
fn unregister_racing_a_send_leaves_no_waker() {
    model(|| {
        let signal = Arc::new(Signal::default());
        let counter = StdArc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        let mut registered: Option<Waker> = None;
        let _ = signal.take(&mut registered, &mut Context::from_waker(&waker));

        let handle = signal.clone();
        let sender = thread::spawn(move || handle.send(CLOSE));
        signal.unregister();
        sender.join().unwrap();

        drop(registered);
        drop(waker);
        assert_eq!(
            StdArc::strong_count(&counter),
            1,
            "the signal still holds the worker's waker"
        );
        let woken = counter.0.load(Relaxed);
        signal.send(RESET_BACKOFF);
        assert_eq!(
            counter.0.load(Relaxed),
            woken,
            "a send after unregister woke the worker"
        );
    });
}
