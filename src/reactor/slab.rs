//! [`Slab`]: connection state in one vector, addressed by a generation-checked key.

use super::id::ConnId;

/// Stores values in a `Vec`, reusing the slots of removed ones through a free list, so the event loop
/// finds a connection's state from an epoll token in O(1) with no hashing and no per-connection
/// allocation beyond the value itself.
///
/// Every slot has a generation, bumped when its value is removed: a [`ConnId`] names a slot *and* the
/// generation it was inserted at, so a stale id (an event queued for a connection that has since closed,
/// or a handler's `send_to` a peer that left) never reaches the connection that reused the slot.
#[derive(Debug)]
pub(crate) struct Slab<V> {
    /// The event loop whose connections these are: ids of another loop's are never found here.
    shard: u16,
    slots: Vec<Slot<V>>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Debug)]
struct Slot<V> {
    generation: u32,
    value: Option<V>,
}

impl<V> Slab<V> {
    pub(crate) fn new(shard: u16) -> Self {
        Slab {
            shard,
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// How many values are stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores the value `make` builds from its future id; returns the id.
    pub(crate) fn insert_with(&mut self, make: impl FnOnce(ConnId) -> V) -> ConnId {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = ConnId::new(self.shard, index, slot.generation);
        slot.value = Some(make(id));
        self.len += 1;
        id
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&V> {
        self.slots
            .get(id.index() as usize)
            .filter(|s| s.generation == id.generation() && id.shard() == self.shard)
            .and_then(|s| s.value.as_ref())
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut V> {
        self.slots
            .get_mut(id.index() as usize)
            .filter(|s| s.generation == id.generation() && id.shard() == self.shard)
            .and_then(|s| s.value.as_mut())
    }

    /// Removes and returns the value; its id (and every copy of it) goes stale.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<V> {
        let slot = self
            .slots
            .get_mut(id.index() as usize)
            .filter(|s| s.generation == id.generation() && id.shard() == self.shard)?;
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index());
        self.len -= 1;
        Some(value)
    }

    /// The id of the first stored value at slot `*cursor` or later, moving the cursor past it: a walk
    /// over every value that leaves the slab free to be borrowed between steps.
    pub(crate) fn nth_id_from(&self, cursor: &mut usize) -> Option<ConnId> {
        while let Some(slot) = self.slots.get(*cursor) {
            *cursor += 1;
            if slot.value.is_some() {
                return Some(ConnId::new(
                    self.shard,
                    (*cursor - 1) as u32,
                    slot.generation,
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_slots_and_rejects_stale_ids() {
        let mut slab = Slab::new(0);
        let a = slab.insert_with(|_| "a");
        let b = slab.insert_with(|_| "b");
        assert_eq!(slab.remove(a), Some("a"));
        let c = slab.insert_with(|id| {
            assert_eq!(id.index(), a.index(), "the freed slot is reused");
            "c"
        });
        assert_eq!(slab.get(a), None, "a's id is stale");
        assert_eq!(slab.get(c), Some(&"c"));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.len(), 2);
        let mut cursor = 0;
        assert_eq!(slab.nth_id_from(&mut cursor), Some(c));
        assert_eq!(slab.nth_id_from(&mut cursor), Some(b));
        assert_eq!(slab.nth_id_from(&mut cursor), None);
    }
}
