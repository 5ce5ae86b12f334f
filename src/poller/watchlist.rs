//! A table of sources registered with one poller lazily: the
//! statemachine's tasks, each added the first time it waits for its socket
//! (a task that never waits costs no system call), kept registered while
//! it lives (level-triggered: resuming and waiting for the same thing
//! again costs nothing), and deleted before it is dropped.

use std::io;
use std::ops::{Index, IndexMut};
use std::os::fd::AsFd;
use std::sync::Arc;

use slab::Slab;

use super::{Interest, Poller};

/// Items keyed as their events are, each watched while its owner says.
pub struct Watchlist<T: AsFd> {
    poller: Arc<Poller>,
    entries: Slab<Entry<T>>,
}

struct Entry<T> {
    item: T,
    /// What its source is registered for (`None`: not added).
    watching: Option<Interest>,
}

impl<T: AsFd> Watchlist<T> {
    /// An empty table on `poller`.
    pub fn new(poller: Arc<Poller>) -> Self {
        Watchlist {
            poller,
            entries: Slab::new(),
        }
    }

    /// The poller its items are registered with.
    pub fn poller(&self) -> &Arc<Poller> {
        &self.poller
    }

    /// Adds `item`, not watched yet; returns its key.
    pub fn insert(&mut self, item: T) -> usize {
        self.entries.insert(Entry {
            item,
            watching: None,
        })
    }

    /// How many items it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The item under `key`.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.entries.get_mut(key).map(|entry| &mut entry.item)
    }

    /// The keys of every item.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|(key, _)| key)
    }

    /// What the item under `key` is watched for (`None`: nothing, or no
    /// such item).
    pub fn watching(&self, key: usize) -> Option<Interest> {
        self.entries.get(key).and_then(|entry| entry.watching)
    }

    /// Watches the item under `key` for `interest`: adds it the first
    /// time, changes it after, and takes no system call when it is watched
    /// for that already.
    ///
    /// # Errors
    /// As [`Poller::add`] and [`Poller::modify`].
    ///
    /// # Panics
    /// No item under `key`.
    pub fn watch(&mut self, key: usize, interest: Interest) -> io::Result<()> {
        let entry = &mut self.entries[key];
        if entry.watching == Some(interest) {
            return Ok(());
        }
        match entry.watching {
            // SAFETY: `unwatch`, `remove` and `drop` delete the source
            // before the item (and the source it owns) can be dropped.
            None => unsafe { self.poller.add(&entry.item, key, interest)? },
            Some(_) => self.poller.modify(&entry.item, key, interest)?,
        }
        entry.watching = Some(interest);
        Ok(())
    }

    /// Stops watching the item under `key`, if it is watched.
    pub fn unwatch(&mut self, key: usize) {
        if let Some(entry) = self.entries.get_mut(key)
            && entry.watching.take().is_some()
        {
            let _ = self.poller.delete(&entry.item);
        }
    }

    /// Deletes the item under `key` from the poller, then hands it back.
    ///
    /// # Panics
    /// No item under `key`.
    pub fn remove(&mut self, key: usize) -> T {
        self.unwatch(key);
        self.entries.remove(key).item
    }
}

impl<T: AsFd> Index<usize> for Watchlist<T> {
    type Output = T;

    fn index(&self, key: usize) -> &T {
        &self.entries[key].item
    }
}

impl<T: AsFd> IndexMut<usize> for Watchlist<T> {
    fn index_mut(&mut self, key: usize) -> &mut T {
        &mut self.entries[key].item
    }
}

impl<T: AsFd> Drop for Watchlist<T> {
    fn drop(&mut self) {
        for (_, entry) in &self.entries {
            if entry.watching.is_some() {
                let _ = self.poller.delete(&entry.item);
            }
        }
    }
}
