//! Spelling -> id lookup over the vocabulary text itself.
//!
//! The 36K vocabulary has about 180K spellings. A `HashMap<String, u32>` cost one
//! allocation and one rehashing insert per spelling, a sixth of a `data prepare` run. This
//! open-addressing table stores only (start, length, id) of each spelling in the vocabulary
//! text, so building it allocates once and a lookup compares bytes in place.

use std::hash::BuildHasher;

/// A free slot (no spelling starts at this offset with this length).
const EMPTY: Slot = Slot {
    start: u32::MAX,
    len: 0,
    id: 0,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    start: u32,
    len: u32,
    id: u32,
}

/// Spelling -> id, spellings given as byte ranges of one text.
#[derive(Debug, Clone)]
pub(crate) struct SpellingIndex {
    slots: Vec<Slot>,
}

fn hash(s: &str) -> usize {
    rustc_hash::FxBuildHasher.hash_one(s) as usize
}

impl SpellingIndex {
    /// An empty index with room for `n` spellings (load at most 1/2).
    pub(crate) fn with_capacity(n: usize) -> Self {
        let cap = (2 * n).next_power_of_two().max(16);
        SpellingIndex {
            slots: vec![EMPTY; cap],
        }
    }

    /// Maps `text[start..start + len]` to `id`; a spelling already present takes the new
    /// id (the later line wins, as in the reference's dict). Offsets fit in u32 (the
    /// caller checks the text size).
    pub(crate) fn insert(&mut self, text: &str, start: usize, len: usize, id: u32) {
        let s = &text[start..start + len];
        let mask = self.slots.len() - 1;
        let mut i = hash(s) & mask;
        loop {
            let slot = &mut self.slots[i];
            if *slot == EMPTY {
                *slot = Slot {
                    start: start as u32,
                    len: len as u32,
                    id,
                };
                return;
            }
            if slot.len as usize == len && &text[slot.start as usize..][..len] == s {
                slot.id = id;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// The id of `spelling`, looked up in the index built over `text`.
    pub(crate) fn get(&self, text: &str, spelling: &str) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = hash(spelling) & mask;
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            if slot.len as usize == spelling.len()
                && &text[slot.start as usize..][..spelling.len()] == spelling
            {
                return Some(slot.id);
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_insert_wins_and_missing_is_none() {
        let text = "ab,cd,ab";
        let mut ix = SpellingIndex::with_capacity(3);
        ix.insert(text, 0, 2, 0);
        ix.insert(text, 3, 2, 1);
        ix.insert(text, 6, 2, 2);
        assert_eq!(ix.get(text, "ab"), Some(2));
        assert_eq!(ix.get(text, "cd"), Some(1));
        assert_eq!(ix.get(text, "a"), None);
        assert_eq!(ix.get(text, "zz"), None);
    }
}
