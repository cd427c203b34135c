//! Live heap bytes per case: a counting global allocator that charges each
//! allocation to the *slot* of the thread that makes it.
//!
//! Every case runs on a runtime of its own whose threads (workers, blocking
//! pool and the thread calling `block_on`) carry the case's slot, so cases
//! running in parallel on other threads do not count each other's memory,
//! and memory a task allocates on one worker and frees on another is still
//! charged to the same case. Slot 0 is "not a case".

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicIsize, AtomicUsize, Ordering},
};

const SLOTS: usize = 64;

static LIVE: [AtomicIsize; SLOTS] = [const { AtomicIsize::new(0) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    // Const-initialised and without a destructor: reading it allocates
    // nothing, so it is safe inside the allocator.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

fn charge(bytes: usize, sign: isize) {
    let slot = SLOT.try_with(Cell::get).unwrap_or(0);
    LIVE[slot].fetch_add(sign * bytes as isize, Ordering::Relaxed);
}

/// `System`, keeping each slot's live bytes: allocated minus freed.
pub struct Counting;

// SAFETY: every call is passed unchanged to `System`; counting touches only
// a const thread-local and a static array of atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size(), 1);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size(), 1);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(layout.size(), -1);
        charge(new_size, 1);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(layout.size(), -1);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// A fresh slot for one case.
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
    LIVE[slot].load(Ordering::Relaxed)
}
