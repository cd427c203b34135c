//! Response errors that mean the connection is dead.
//!
//! A user's classifier ([`ReconnectLayer::disconnect_on`]) looks at each
//! response error. The response future that sees a fatal one cannot touch
//! the service (it has no reference to it, and may run on another task), so
//! it leaves a [`Report`] with the shared [`Detector`]: which connection died
//! and why, and a wake-up for the task that drives the service. The service
//! reads the report on its next `poll_ready`, and drops that connection
//! through the same path as any other loss.
//!
//! [`ReconnectLayer::disconnect_on`]: crate::ReconnectLayer::disconnect_on

use std::{
    error::Error,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::Context,
};

use futures_util::task::AtomicWaker;

use crate::error::Cause;

/// Says whether a response error means the connection is dead.
pub(crate) type Classifier = dyn Fn(&(dyn Error + Send + Sync + 'static)) -> bool + Send + Sync;

/// What a service and the response futures of its connections share.
pub(crate) struct Detector {
    classifier: Arc<Classifier>,
    /// The highest connection generation a fatal error was seen on.
    lost: AtomicU64,
    /// What the fatal error said, for the watch and the log (the error
    /// itself went to the caller).
    message: Mutex<Option<String>>,
    /// The task that last polled for readiness: a report wakes it, so an
    /// owner that polls only when woken (the shared handle's task) drops the
    /// dead connection at once, as it would on a `poll_ready` error.
    waker: AtomicWaker,
}

impl Detector {
    pub(crate) fn new(classifier: Arc<Classifier>) -> Arc<Self> {
        Arc::new(Self {
            classifier,
            lost: AtomicU64::new(0),
            message: Mutex::new(None),
            waker: AtomicWaker::new(),
        })
    }

    /// What the response futures on connection `generation` report
    /// through (the connection's `Activity` holds it).
    pub(crate) fn report(self: &Arc<Self>, generation: u64) -> Report {
        Report {
            detector: self.clone(),
            generation,
        }
    }

    /// Leaves the polling task's waker for a report. Called before looking
    /// for one, so a report in between is not missed.
    pub(crate) fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// The fatal error reported on connection `generation` or a later one,
    /// if any; taken, so it is acted on once.
    #[cold]
    pub(crate) fn take_loss(&self, generation: u64) -> Option<Cause> {
        if self.lost.load(Ordering::Acquire) < generation {
            return None;
        }
        let message = self.message.lock().ok()?.take()?;
        Some(Arc::new(FatalResponse(message)))
    }
}

/// What a connection's response futures report a fatal error through.
pub(crate) struct Report {
    detector: Arc<Detector>,
    generation: u64,
}

impl Report {
    /// Classifies a response error; a fatal one marks the connection lost
    /// and wakes the service's task.
    pub(crate) fn error(&self, err: &(dyn Error + Send + Sync + 'static)) {
        let detector = &self.detector;
        if (detector.classifier)(err) {
            if let Ok(mut message) = detector.message.lock() {
                *message = Some(err.to_string());
            }
            detector.lost.fetch_max(self.generation, Ordering::AcqRel);
            detector.waker.wake();
        }
    }
}

/// A response error the classifier called fatal, as text: the error itself
/// went to the caller.
#[derive(Debug)]
struct FatalResponse(String);

impl fmt::Display for FatalResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fatal response error: {}", self.0)
    }
}

impl Error for FatalResponse {}
