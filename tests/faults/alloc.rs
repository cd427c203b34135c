//! Live heap bytes per thread, kept by a global allocator, as in
//! `tests/memory.rs`: each case of the matrix runs on a thread of its own
//! (a current-thread runtime), so its count is not disturbed by the others.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

/// `System`, keeping each thread's live bytes: allocated minus freed.
struct Counting;

thread_local! {
    // Const-initialised and without a destructor: using it allocates
    // nothing, so it is safe inside the allocator. Signed, because a thread
    // may free what another allocated.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: usize, sign: isize) {
    let _ = LIVE.try_with(|live| live.set(live.get() + sign * bytes as isize));
}

// SAFETY: every call is passed unchanged to `System`; counting touches
// only a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size(), 1);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size(), 1);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(layout.size(), -1);
        add(new_size, 1);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(layout.size(), -1);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's live heap bytes.
pub fn live() -> isize {
    LIVE.with(Cell::get)
}
