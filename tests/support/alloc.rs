//! A counting global allocator: `System`, telling a [`Tally`] of every
//! allocation and free, and the tallies the tests keep: allocations per
//! thread (`tests/alloc.rs`), live bytes per thread (`tests/memory.rs`, the
//! fault matrix) and live bytes per case (the soak).
//!
//! Only the type is shared: each binary that counts declares its own
//! `#[global_allocator]` static, e.g.
//! `static GLOBAL: Counting<ThreadLive> = Counting::new();`.
//!
//! Everything a tally touches is const-initialised thread-locals without a
//! destructor and static atomics: counting allocates nothing, so it is safe
//! inside the allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    marker::PhantomData,
    sync::atomic::{AtomicIsize, AtomicUsize, Ordering},
};

/// What a [`Counting`] allocator keeps. A reallocation is a free of the old
/// block, then an allocation of the new one.
pub trait Tally {
    /// `bytes` were allocated (`sign` 1) or freed (`sign` -1).
    fn charge(bytes: usize, sign: isize);
}

/// `System`, telling `T` of every allocation and free.
pub struct Counting<T>(PhantomData<fn() -> T>);

impl<T> Counting<T> {
    /// The allocator, for a `#[global_allocator]` static.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

// SAFETY: every call is passed unchanged to `System`; counting touches
// only const thread-locals and static atomics (see `Tally`'s implementors).
unsafe impl<T: Tally> GlobalAlloc for Counting<T> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        T::charge(layout.size(), 1);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        T::charge(layout.size(), 1);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        T::charge(layout.size(), -1);
        T::charge(new_size, 1);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        T::charge(layout.size(), -1);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// ===== allocations per thread =====

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Counts the allocations (and reallocations) of each thread apart, so that
/// tests running in parallel do not count each other's.
pub enum ThreadAllocations {}

impl Tally for ThreadAllocations {
    fn charge(_: usize, sign: isize) {
        if sign > 0 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    }
}

impl ThreadAllocations {
    /// How many allocations this thread has made so far.
    pub fn count() -> usize {
        ALLOCATIONS.with(Cell::get)
    }
}

// ===== live bytes per thread =====

thread_local! {
    // Signed, because a thread may free what another allocated.
    static THREAD_LIVE: Cell<isize> = const { Cell::new(0) };
}

/// Keeps each thread's live bytes: allocated minus freed.
pub enum ThreadLive {}

impl Tally for ThreadLive {
    fn charge(bytes: usize, sign: isize) {
        let _ = THREAD_LIVE.try_with(|live| live.set(live.get() + sign * bytes as isize));
    }
}

impl ThreadLive {
    /// This thread's live heap bytes.
    pub fn live() -> isize {
        THREAD_LIVE.with(Cell::get)
    }
}

// ===== live bytes per slot =====

const SLOTS: usize = 64;

static SLOT_LIVE: [AtomicIsize; SLOTS] = [const { AtomicIsize::new(0) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Keeps each slot's live bytes, charging every allocation and free to the
/// slot of the thread that makes it: threads that [`enter`](Self::enter)
/// one slot share its count, so memory allocated on one of them and freed
/// on another is still charged to the same slot. Slot 0 is "no slot".
pub enum SlotLive {}

impl Tally for SlotLive {
    fn charge(bytes: usize, sign: isize) {
        let slot = SLOT.try_with(Cell::get).unwrap_or(0);
        SLOT_LIVE[slot].fetch_add(sign * bytes as isize, Ordering::Relaxed);
    }
}

impl SlotLive {
    /// A fresh slot.
    pub fn new_slot() -> usize {
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        assert!(slot < SLOTS, "more cases than heap slots");
        slot
    }

    /// Charges this thread's allocations to `slot` from now on.
    pub fn enter(slot: usize) {
        SLOT.with(|s| s.set(slot));
    }

    /// The live heap bytes charged to `slot`.
    pub fn live(slot: usize) -> isize {
        SLOT_LIVE[slot].load(Ordering::Relaxed)
    }
}
