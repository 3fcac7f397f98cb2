//! A memory context for short-lived work whose results are copied out into Rust values (e.g.
//! `to_jsonb` of a version, printed): what PostgreSQL's functions allocate there goes at once,
//! instead of staying in the call's context until a batch of a million rows ends.

use pgrx::pg_sys;

pub(super) struct Scratch(pg_sys::MemoryContext);

impl Scratch {
    /// A child of the current memory context (deleted with it, should an error end the call).
    pub(super) fn new() -> Scratch {
        // SAFETY: creating a child of the current context, which outlives this value.
        Scratch(unsafe {
            pg_sys::AllocSetContextCreateInternal(
                pg_sys::CurrentMemoryContext,
                c"pg_safeupsert scratch".as_ptr(),
                pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
            )
        })
    }

    /// Runs `f` with the scratch context current, then empties it: `f` must return nothing
    /// that points into it.
    pub(super) fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        /// Switches back on the way out, an error's unwinding included.
        struct Back(pg_sys::MemoryContext);
        impl Drop for Back {
            fn drop(&mut self) {
                // SAFETY: the context that was current before, still alive.
                unsafe { pg_sys::MemoryContextSwitchTo(self.0) };
            }
        }
        // SAFETY: the context is alive as long as `self`.
        let back = Back(unsafe { pg_sys::MemoryContextSwitchTo(self.0) });
        let result = f();
        drop(back);
        // SAFETY: nothing returned points into it (the caller's contract); it is not current.
        unsafe { pg_sys::MemoryContextReset(self.0) };
        result
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: made by `new`, not current (`run` switched back), deleted once.
        unsafe { pg_sys::MemoryContextDelete(self.0) };
    }
}
