//! Span records whose allocations go back to the request path once
//! exported. A record is filled on a request thread and dropped on the
//! export thread; with the allocator's per-thread caches, every such
//! record cost the request thread a slow-path `malloc` and the export
//! thread a cross-thread `free`. Recycled, a record's box costs a pop and
//! a push on a lock-free queue instead.

use std::ops::{Deref, DerefMut};

use crossbeam_queue::ArrayQueue;

/// Empty record boxes, ready to be filled again.
#[derive(Debug)]
pub(crate) struct Recycler<T> {
    free: ArrayQueue<Box<Option<T>>>,
}

/// A record in a box that goes back to its [`Recycler`] when exported.
#[derive(Debug)]
pub(crate) struct Pooled<T> {
    /// `Some` until [`Recycler::recycle`] empties it.
    slot: Box<Option<T>>,
}

impl<T> Recycler<T> {
    /// Keeps at most `capacity` empty boxes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            free: ArrayQueue::new(capacity.max(1)),
        }
    }

    /// `value` in a box: a recycled one when there is one, a new one
    /// otherwise.
    pub(crate) fn fill(&self, value: T) -> Pooled<T> {
        let slot = match self.free.pop() {
            Some(mut slot) => {
                *slot = Some(value);
                slot
            }
            None => Box::new(Some(value)),
        };
        Pooled { slot }
    }

    /// Drops the record here and keeps its box for [`Self::fill`] (freed
    /// when the recycler is full).
    pub(crate) fn recycle(&self, mut record: Pooled<T>) {
        *record.slot = None;
        let _ = self.free.push(record.slot);
    }
}

impl<T> Deref for Pooled<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.slot
            .as_ref()
            .as_ref()
            .expect("a pooled record holds its value until it is recycled")
    }
}

impl<T> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.slot
            .as_mut()
            .as_mut()
            .expect("a pooled record holds its value until it is recycled")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_reused_and_values_dropped_on_recycle() {
        let pool = Recycler::new(1);
        let value = std::sync::Arc::new(());
        let a = pool.fill(value.clone());
        let a_box: *const Option<_> = &*a.slot;
        assert_eq!(std::sync::Arc::strong_count(&value), 2);
        pool.recycle(a);
        assert_eq!(
            std::sync::Arc::strong_count(&value),
            1,
            "dropped when recycled"
        );
        let b = pool.fill(value.clone());
        assert!(std::ptr::eq(a_box, &*b.slot), "the box came back");
        assert!(std::sync::Arc::ptr_eq(&b, &value));
        // Full: a second empty box is freed, not kept.
        let c = pool.fill(value.clone());
        pool.recycle(b);
        pool.recycle(c);
        assert_eq!(pool.free.len(), 1);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }
}
