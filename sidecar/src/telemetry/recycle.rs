//! Span records whose allocations go back to the request path once
//! exported. A record is filled on a request thread and dropped on the
//! export thread; with the allocator's per-thread caches, every such
//! record cost the request thread a slow-path `malloc` and the export
//! thread a cross-thread `free`. Recycled, a record's box costs a pop and
//! a push on a lock-free queue instead.
//!
//! A record may also keep allocations of its own from one use to the next
//! (its [`Recycle::Spare`]): the text a server span copies out of the
//! request head goes into the buffers of the record before it.

use std::ops::{Deref, DerefMut};

use crossbeam_queue::ArrayQueue;

/// A record that hands its reusable allocations back when it is dropped.
pub(crate) trait Recycle {
    /// The allocations kept between uses (emptied, capacity kept).
    type Spare: Default + std::fmt::Debug;

    /// Takes this record's reusable allocations, emptied.
    fn spare(&mut self) -> Self::Spare;
}

/// Empty record boxes, ready to be filled again.
#[derive(Debug)]
pub(crate) struct Recycler<T: Recycle> {
    free: ArrayQueue<Box<Slot<T>>>,
    /// Boxes allocated so far: tests check that warm boxes are reused.
    #[cfg(test)]
    made: std::sync::atomic::AtomicUsize,
}

/// A record in a box that goes back to its [`Recycler`] when exported.
#[derive(Debug)]
pub(crate) struct Pooled<T: Recycle> {
    slot: Box<Slot<T>>,
}

/// A box's content: the record while it is in use, and what the last one
/// left for the next.
#[derive(Debug)]
struct Slot<T: Recycle> {
    /// `Some` until [`Recycler::recycle`] empties it.
    value: Option<T>,
    spare: T::Spare,
}

impl<T: Recycle> Recycler<T> {
    /// Keeps at most `capacity` empty boxes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            free: ArrayQueue::new(capacity.max(1)),
            #[cfg(test)]
            made: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How many boxes [`Self::fill`] has allocated.
    #[cfg(test)]
    pub(crate) fn made(&self) -> usize {
        self.made.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The record `make` builds from the allocations the box's last record
    /// left, in a box: a recycled one when there is one, a new one
    /// otherwise.
    pub(crate) fn fill(&self, make: impl FnOnce(T::Spare) -> T) -> Pooled<T> {
        let slot = match self.free.pop() {
            Some(mut slot) => {
                slot.value = Some(make(std::mem::take(&mut slot.spare)));
                slot
            }
            None => {
                #[cfg(test)]
                self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Box::new(Slot {
                    value: Some(make(T::Spare::default())),
                    spare: T::Spare::default(),
                })
            }
        };
        Pooled { slot }
    }

    /// Drops the record here and keeps its box, with its spare
    /// allocations, for [`Self::fill`] (freed when the recycler is full).
    pub(crate) fn recycle(&self, mut record: Pooled<T>) {
        let slot = &mut *record.slot;
        if let Some(value) = &mut slot.value {
            slot.spare = value.spare();
        }
        // Dropped in place: taken out, the record was copied first.
        slot.value = None;
        let _ = self.free.push(record.slot);
    }
}

impl<T: Recycle> Deref for Pooled<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.slot
            .value
            .as_ref()
            .expect("a pooled record holds its value until it is recycled")
    }
}

impl<T: Recycle> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.slot
            .value
            .as_mut()
            .expect("a pooled record holds its value until it is recycled")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A record holding a shared value and a buffer it leaves behind.
    #[derive(Debug)]
    struct Rec(Arc<()>, Vec<u8>);

    impl Recycle for Rec {
        type Spare = Vec<u8>;

        fn spare(&mut self) -> Vec<u8> {
            let mut buf = std::mem::take(&mut self.1);
            buf.clear();
            buf
        }
    }

    #[test]
    fn boxes_and_spares_are_reused_and_values_dropped_on_recycle() {
        let pool = Recycler::new(1);
        let value = Arc::new(());
        let a = pool.fill(|spare: Vec<u8>| {
            assert!(spare.is_empty(), "a new box has nothing to reuse");
            let mut buf = spare;
            buf.extend_from_slice(b"head text");
            Rec(value.clone(), buf)
        });
        let a_box: *const Slot<Rec> = &*a.slot;
        let a_buf = a.1.as_ptr();
        assert_eq!(Arc::strong_count(&value), 2);
        pool.recycle(a);
        assert_eq!(Arc::strong_count(&value), 1, "dropped when recycled");
        let b = pool.fill(|spare| {
            assert!(spare.is_empty(), "the spare comes back emptied");
            assert!(spare.capacity() >= 9, "with its capacity");
            assert_eq!(spare.as_ptr(), a_buf, "the same allocation");
            Rec(value.clone(), spare)
        });
        assert!(std::ptr::eq(a_box, &*b.slot), "the box came back");
        assert!(Arc::ptr_eq(&b.0, &value));
        // Full: a second empty box is freed, not kept.
        let c = pool.fill(|spare| Rec(value.clone(), spare));
        pool.recycle(b);
        pool.recycle(c);
        assert_eq!(pool.free.len(), 1);
        assert_eq!(Arc::strong_count(&value), 1);
    }
}
