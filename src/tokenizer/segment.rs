//! Greedy segmentation (section 3 step 3) over a text already turned into code points.
//!
//! At each position the reference looks at the windows of 3, 2 and 1 characters and takes
//! the one with the smallest id (not the longest; on equal ids the longer one, because its
//! sort is stable). A window starting with `<` that is longer than two characters and in the
//! vocabulary wins at once, the longest such one (special tokens such as `<SP>`).
//!
//! Lookups without allocation: a two-level table indexed by code point for single
//! characters; per first character, a short list (scanned, or hashed when long) of the
//! second characters of pairs; an open-addressing map keyed by packed code points (21 bits
//! each) for triples. Flags say whether a longer window can exist, so most positions cost
//! one or two lookups. Spellings starting with `<` live in a small character trie walked
//! for the longest match. `segment_until` lets long texts be segmented in pieces.

use super::vocab::Vocab;

/// The most characters a window looks at, except at a `<` (see [`Segmenter::lookahead`]).
pub(crate) const WINDOW: usize = 3;

const NONE: u32 = u32::MAX;
/// Flag bit of a single-character or pair entry: a longer spelling extends it.
const HAS_LONGER: u32 = 1 << 31;
/// Low bits of an entry: the id, or all ones for "no spelling of this length".
const ID_MASK: u32 = !HAS_LONGER;

/// Code point -> entry, for all of Unicode, in 256-entry pages allocated on demand.
/// Entry: low 32 bits the single-character id (or ID_MASK) plus HAS_LONGER; high 32 bits
/// the index of the character's pair list in `Segmenter::kid_offsets`.
#[derive(Debug, Clone)]
struct CharTable {
    index: Vec<u16>,
    pages: Vec<[u64; 256]>,
}

impl CharTable {
    fn new() -> Self {
        CharTable {
            index: vec![0; 0x1100],
            pages: vec![[ID_MASK as u64; 256]],
        }
    }

    #[inline]
    fn get(&self, c: u32) -> u64 {
        // Code points come from `char`, so `c >> 8 < 0x1100`.
        self.pages[self.index[(c >> 8) as usize] as usize][(c & 0xff) as usize]
    }

    fn get_mut(&mut self, c: u32) -> &mut u64 {
        let slot = (c >> 8) as usize;
        if self.index[slot] == 0 {
            self.pages.push([ID_MASK as u64; 256]);
            self.index[slot] = (self.pages.len() - 1) as u16;
        }
        &mut self.pages[self.index[slot] as usize][(c & 0xff) as usize]
    }
}

/// u64 -> u32 open-addressing map (linear probing, load <= 1/2). Key and value share a
/// slot, so a lookup usually touches one cache line; keys are packed code points, never
/// `EMPTY`.
#[derive(Debug, Clone)]
struct PackedMap {
    slots: Vec<(u64, u32)>,
    shift: u32,
}

const EMPTY: u64 = u64::MAX;

impl PackedMap {
    /// A map of distinct keys given in key order (so the layout never depends on the
    /// order spellings were seen in).
    fn from_sorted(pairs: &[(u64, u32)]) -> Self {
        let cap = (pairs.len() * 2).next_power_of_two().max(16);
        let mut map = PackedMap {
            slots: vec![(EMPTY, 0); cap],
            shift: 64 - cap.trailing_zeros(),
        };
        for &(k, v) in pairs {
            let mut i = map.slot(k);
            while map.slots[i].0 != EMPTY {
                i = (i + 1) & (cap - 1);
            }
            map.slots[i] = (k, v);
        }
        map
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn get(&self, key: u64) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let (k, v) = self.slots[i];
            if k == key {
                return Some(v);
            }
            if k == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }
}

/// Pair lists up to this length are scanned; longer ones are hashed.
const LINEAR_KIDS: usize = 16;
/// Free slot of a hashed pair list (no character has this code).
const EMPTY_KID: u32 = u32::MAX;

/// Home slot of `c2` in a hashed pair list of `cap` (a power of two > 16) slots.
#[inline]
fn kid_slot(c2: u32, cap: usize) -> usize {
    (c2.wrapping_mul(0x9E37_79B1) >> (32 - cap.trailing_zeros())) as usize
}

#[inline]
fn pack2(a: u32, b: u32) -> u64 {
    ((a as u64) << 21) | b as u64
}

#[inline]
fn pack3(a: u32, b: u32, c: u32) -> u64 {
    ((a as u64) << 42) | ((b as u64) << 21) | c as u64
}

/// Character trie over the spellings that start with `<` and are longer than 2 characters.
/// Children are kept in small sorted arrays: few nodes have more than a dozen children, so
/// a scan beats hashing.
#[derive(Debug, Clone)]
struct AngleTrie {
    /// Per node: range of its children in `edges`, and the id ending there (or NONE).
    nodes: Vec<(u32, u32, u32)>,
    /// (char, child node), grouped by parent, sorted by char.
    edges: Vec<(u32, u32)>,
}

impl AngleTrie {
    fn new(mut spellings: Vec<(Vec<u32>, u32)>) -> Self {
        // Build level by level from sorted spellings so each node's children are contiguous.
        spellings.sort_unstable();
        let mut trie = AngleTrie {
            nodes: vec![(0, 0, NONE)],
            edges: Vec::new(),
        };
        // (node, start, end, depth): spellings[start..end] share the first `depth` chars.
        let mut queue =
            std::collections::VecDeque::from([(0usize, 0usize, spellings.len(), 0usize)]);
        while let Some((node, start, end, depth)) = queue.pop_front() {
            let first_edge = trie.edges.len() as u32;
            let mut i = start;
            while i < end {
                if spellings[i].0.len() == depth {
                    trie.nodes[node].2 = spellings[i].1;
                    i += 1;
                    continue;
                }
                let c = spellings[i].0[depth];
                let mut j = i;
                while j < end && spellings[j].0.len() > depth && spellings[j].0[depth] == c {
                    j += 1;
                }
                let child = trie.nodes.len();
                trie.nodes.push((0, 0, NONE));
                trie.edges.push((c, child as u32));
                queue.push_back((child, i, j, depth + 1));
                i = j;
            }
            trie.nodes[node].0 = first_edge;
            trie.nodes[node].1 = trie.edges.len() as u32;
        }
        trie
    }

    /// Longest spelling at the start of `text`: (id, length in chars).
    #[inline]
    fn longest(&self, text: &[u32]) -> Option<(u32, usize)> {
        let mut node = 0usize;
        let mut best = None;
        for (i, &c) in text.iter().enumerate() {
            let (lo, hi, _) = self.nodes[node];
            let children = &self.edges[lo as usize..hi as usize];
            match children.iter().find(|e| e.0 == c) {
                Some(&(_, child)) => node = child as usize,
                None => break,
            }
            let id = self.nodes[node].2;
            if id != NONE {
                best = Some((id, i + 1));
            }
        }
        best
    }
}

/// Fallback ids for characters no window covers.
#[derive(Debug, Clone)]
pub(crate) struct Fallback {
    pub kigou: u32,
    pub u2000u2bff: u32,
    pub bytes: [u32; 256],
}

/// The lookup tables of one vocabulary.
#[derive(Debug, Clone)]
pub(crate) struct Segmenter {
    singles: CharTable,
    /// Second characters of pairs, grouped by first character and sorted: (c2, entry),
    /// entry = id (or ID_MASK) with HAS_LONGER when a triple extends the pair. Grouping
    /// keeps a character's pairs in a few cache lines (a global hash table of pairs
    /// missed the cache on almost every lookup).
    kids: Vec<(u32, u32)>,
    /// Pair list k is `kids[kid_offsets[k]..kid_offsets[k + 1]]`.
    kid_offsets: Vec<u32>,
    triples: PackedMap,
    angle: AngleTrie,
    fallback: Fallback,
    lookahead: usize,
}

impl Segmenter {
    pub(crate) fn new(vocab: &Vocab) -> Self {
        let mut singles = CharTable::new();
        let n = vocab.len();
        // (packed pair, entry) of every 2-character spelling and of the first two
        // characters of every 3-character one, and (packed triple, id): merged after
        // sorting, which is cheaper than hashing 150K spellings.
        let mut pair_rows: Vec<(u64, u32)> = Vec::with_capacity(n * 5);
        let mut triple_rows: Vec<(u64, u32)> = Vec::with_capacity(n / 2);
        let mut angle_spellings: Vec<(Vec<u32>, u32)> = Vec::new();
        let mut chars: Vec<u32> = Vec::with_capacity(4);
        // In file order: ids grow, so a later line overwrites (or outranks) an earlier one
        // holding the same spelling, as in the reference's dict.
        for (spelling, id) in vocab.iter_spellings() {
            chars.clear();
            chars.extend(spelling.chars().take(4).map(|c| c as u32));
            if chars[0] == '<' as u32 && chars.len() > 2 {
                angle_spellings.push((spelling.chars().map(|c| c as u32).collect(), id));
                continue;
            }
            match chars.len() {
                1 => {
                    let e = singles.get_mut(chars[0]);
                    *e = (*e & HAS_LONGER as u64) | id as u64;
                }
                2 => {
                    *singles.get_mut(chars[0]) |= HAS_LONGER as u64;
                    pair_rows.push((pack2(chars[0], chars[1]), id));
                }
                3 => {
                    *singles.get_mut(chars[0]) |= HAS_LONGER as u64;
                    pair_rows.push((pack2(chars[0], chars[1]), HAS_LONGER | ID_MASK));
                    triple_rows.push((pack3(chars[0], chars[1], chars[2]), id));
                }
                // Longer spellings can never be looked up by the reference (its window is
                // three characters unless the first one is `<`).
                _ => {}
            }
        }
        let pairs = merge_pairs(pair_rows);
        triple_rows.sort_unstable();
        // The largest id of a triple is the later line's.
        triple_rows.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = later.1;
            }
            same
        });
        let lookup = |s: &str| vocab.id(s).expect("Vocab::from_entries checked it");
        // Bytes that never occur in UTF-8 may be missing; they are never looked up.
        let mut bytes = [0u32; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = vocab.id(&format!("<|byte{b}|>")).unwrap_or(0);
        }
        let lookahead = angle_spellings
            .iter()
            .map(|(c, _)| c.len())
            .max()
            .unwrap_or(0)
            .max(WINDOW);
        let angle = AngleTrie::new(angle_spellings);
        let sorted_pairs = pairs;
        let mut kids = Vec::with_capacity(sorted_pairs.len());
        let mut kid_offsets = vec![0u32];
        let mut group: Vec<(u32, u32)> = Vec::new();
        for (i, &(key, entry)) in sorted_pairs.iter().enumerate() {
            let c1 = (key >> 21) as u32;
            group.push(((key & 0x1f_ffff) as u32, entry));
            let last_of_c1 = sorted_pairs
                .get(i + 1)
                .is_none_or(|&(next, _)| (next >> 21) as u32 != c1);
            if last_of_c1 {
                let k = kid_offsets.len() as u64 - 1;
                *singles.get_mut(c1) |= k << 32;
                if group.len() <= LINEAR_KIDS {
                    kids.append(&mut group);
                } else {
                    // A small open-addressing table (load <= 1/2) for characters with many
                    // pairs (kana, punctuation): one probe instead of a binary search.
                    let cap = (group.len() * 2).next_power_of_two();
                    let start = kids.len();
                    kids.resize(start + cap, (EMPTY_KID, ID_MASK));
                    for &(c2, e) in &group {
                        let mut j = kid_slot(c2, cap);
                        while kids[start + j].0 != EMPTY_KID {
                            j = (j + 1) & (cap - 1);
                        }
                        kids[start + j] = (c2, e);
                    }
                    group.clear();
                }
                kid_offsets.push(kids.len() as u32);
            }
        }
        Segmenter {
            singles,
            kids,
            kid_offsets,
            triples: PackedMap::from_sorted(&triple_rows),
            angle,
            lookahead,
            fallback: Fallback {
                kigou: lookup("<KIGOU>"),
                u2000u2bff: lookup("<U2000U2BFF>"),
                bytes,
            },
        }
    }

    /// Appends the ids of `text` (code points) to `out`.
    pub(crate) fn segment(&self, text: &[u32], out: &mut Vec<u32>) {
        self.segment_until(text, text.len(), out);
    }

    /// How many characters past a position segmentation may look at (the longest
    /// spelling: 3, or a longer `<`-token).
    pub(crate) fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// Segments the tokens that start before `limit` and returns where the next one
    /// starts. With `limit + lookahead() <= text.len()` the result is what segmenting the
    /// whole text would give, so long texts can be processed in pieces.
    pub(crate) fn segment_until(&self, text: &[u32], limit: usize, out: &mut Vec<u32>) -> usize {
        self.segment_noting(text, limit, out, |_, _| {})
    }

    /// [`Self::segment_until`], calling `note(start, ids before it)` at every token.
    #[inline(always)]
    pub(crate) fn segment_noting(
        &self,
        text: &[u32],
        limit: usize,
        out: &mut Vec<u32>,
        mut note: impl FnMut(usize, usize),
    ) -> usize {
        let n = text.len();
        let mut pos = 0;
        while pos < limit {
            note(pos, out.len());
            let c1 = text[pos];
            if c1 == '<' as u32 {
                if let Some((id, len)) = self.angle.longest(&text[pos..]) {
                    out.push(id);
                    pos += len;
                    continue;
                }
            }
            let entry = self.singles.get(c1);
            let single = entry as u32;
            let mut best = NONE;
            let mut len = 1;
            if single & HAS_LONGER != 0 && pos + 1 < n {
                if let Some(pair) = self.pair(entry, text[pos + 1]) {
                    if pair & HAS_LONGER != 0 && pos + 2 < n {
                        if let Some(id) = self.triples.get(pack3(c1, text[pos + 1], text[pos + 2]))
                        {
                            best = id;
                            len = 3;
                        }
                    }
                    let id = pair & ID_MASK;
                    if id != ID_MASK && id < best {
                        best = id;
                        len = 2;
                    }
                }
            }
            let id = single & ID_MASK;
            if id != ID_MASK && id < best {
                best = id;
                len = 1;
            }
            if best != NONE {
                out.push(best);
                pos += len;
            } else {
                self.fallback(c1, out);
                pos += 1;
            }
        }
        pos
    }

    /// The pair entry of (the character of `entry`, `c2`).
    #[inline(always)]
    fn pair(&self, entry: u64, c2: u32) -> Option<u32> {
        let k = (entry >> 32) as usize;
        let kids = &self.kids[self.kid_offsets[k] as usize..self.kid_offsets[k + 1] as usize];
        if kids.len() <= LINEAR_KIDS {
            return kids.iter().find(|e| e.0 == c2).map(|e| e.1);
        }
        // Hashed list: its length is a power of two (see `new`).
        let mask = kids.len() - 1;
        let mut j = kid_slot(c2, kids.len());
        loop {
            let (c, e) = kids[j];
            if c == c2 {
                return Some(e);
            }
            if c == EMPTY_KID {
                return None;
            }
            j = (j + 1) & mask;
        }
    }

    /// `<KIGOU>`, `<U2000U2BFF>` or one byte token per UTF-8 byte.
    #[inline(never)]
    fn fallback(&self, c: u32, out: &mut Vec<u32>) {
        let f = &self.fallback;
        if is_kigou(c) {
            out.push(f.kigou);
        } else if (0x2000..=0x2bff).contains(&c) {
            out.push(f.u2000u2bff);
        } else {
            let ch = char::from_u32(c).unwrap_or('\u{fffd}');
            let mut buf = [0u8; 4];
            for &b in ch.encode_utf8(&mut buf).as_bytes() {
                out.push(f.bytes[b as usize]);
            }
        }
    }
}

/// One entry per pair from rows of (packed pair, entry) sorted by pair: the largest id of
/// a 2-character spelling (or ID_MASK when only longer spellings start with the pair), with
/// HAS_LONGER when a 3-character spelling extends it.
fn merge_pairs(mut rows: Vec<(u64, u32)>) -> Vec<(u64, u32)> {
    rows.sort_unstable_by_key(|r| r.0);
    let mut out: Vec<(u64, u32)> = Vec::with_capacity(rows.len());
    for (key, entry) in rows {
        let id = entry & ID_MASK;
        match out.last_mut() {
            Some(last) if last.0 == key => {
                let best = match (last.1 & ID_MASK, id) {
                    (ID_MASK, x) | (x, ID_MASK) => x,
                    (a, b) => a.max(b),
                };
                last.1 = (last.1 & HAS_LONGER) | (entry & HAS_LONGER) | best;
            }
            _ => out.push((key, entry)),
        }
    }
    out
}

/// The 2-byte UTF-8 symbols the reference maps to `<KIGOU>` (byte pairs C2A1-C2BF,
/// C780-C783, CAB9-CBBF, CC80-CDA2).
#[inline]
pub(crate) fn is_kigou(c: u32) -> bool {
    matches!(c, 0xa1..=0xbf | 0x1c0..=0x1c3 | 0x2b9..=0x2ff | 0x300..=0x362)
}
