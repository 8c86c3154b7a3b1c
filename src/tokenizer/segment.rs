//! Greedy segmentation (section 3 step 3) over a text already turned into code points.
//!
//! At each position the reference looks at the windows of 3, 2 and 1 characters and takes
//! the one with the smallest id (not the longest; on equal ids the longer one, because its
//! sort is stable). A window starting with `<` that is longer than two characters and in the
//! vocabulary wins at once, the longest such one (special tokens such as `<SP>`).
//!
//! Lookups without allocation: a two-level table indexed by code point for single
//! characters, and hash maps keyed by the packed code points (21 bits each) for pairs and
//! triples. Flags say whether a longer window can exist, so most positions cost one or two
//! lookups. Spellings starting with `<` live in a small character trie walked for the
//! longest match.

use rustc_hash::FxHashMap;

use super::vocab::Vocab;

const NONE: u32 = u32::MAX;
/// Flag bit of a single-character or pair entry: a longer spelling extends it.
const HAS_LONGER: u32 = 1 << 31;
/// Low bits of an entry: the id, or all ones for "no spelling of this length".
const ID_MASK: u32 = !HAS_LONGER;

/// Code point -> value, for all of Unicode, in 256-entry pages allocated on demand.
#[derive(Debug, Clone)]
struct CharTable {
    index: Vec<u16>,
    pages: Vec<[u32; 256]>,
}

impl CharTable {
    fn new() -> Self {
        CharTable {
            index: vec![0; 0x1100],
            pages: vec![[ID_MASK; 256]],
        }
    }

    #[inline]
    fn get(&self, c: u32) -> u32 {
        // Code points come from `char`, so `c >> 8 < 0x1100`.
        self.pages[self.index[(c >> 8) as usize] as usize][(c & 0xff) as usize]
    }

    fn get_mut(&mut self, c: u32) -> &mut u32 {
        let slot = (c >> 8) as usize;
        if self.index[slot] == 0 {
            self.pages.push([ID_MASK; 256]);
            self.index[slot] = (self.pages.len() - 1) as u16;
        }
        &mut self.pages[self.index[slot] as usize][(c & 0xff) as usize]
    }
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
#[derive(Debug, Clone, Default)]
struct AngleTrie {
    /// (node, char) -> child node. Node 0 is the root (before `<`).
    edges: FxHashMap<(u32, u32), u32>,
    /// Id of the spelling ending at each node, or NONE.
    terminal: Vec<u32>,
}

impl AngleTrie {
    fn insert(&mut self, spelling: &str, id: u32) {
        if self.terminal.is_empty() {
            self.terminal.push(NONE);
        }
        let mut node = 0u32;
        for c in spelling.chars() {
            let next = self.terminal.len() as u32;
            node = *self.edges.entry((node, c as u32)).or_insert_with(|| next);
            if node == next {
                self.terminal.push(NONE);
            }
        }
        self.terminal[node as usize] = id;
    }

    /// Longest spelling at the start of `text`: (id, length in chars).
    #[inline]
    fn longest(&self, text: &[u32]) -> Option<(u32, usize)> {
        let mut node = 0u32;
        let mut best = None;
        for (i, &c) in text.iter().enumerate() {
            match self.edges.get(&(node, c)) {
                Some(&n) => node = n,
                None => break,
            }
            let id = self.terminal[node as usize];
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
    /// Pair -> id (or NONE) with HAS_LONGER when a triple extends it.
    pairs: FxHashMap<u64, u32>,
    triples: FxHashMap<u64, u32>,
    angle: AngleTrie,
    fallback: Fallback,
}

impl Segmenter {
    pub(crate) fn new(vocab: &Vocab) -> Self {
        let mut singles = CharTable::new();
        let mut pairs: FxHashMap<u64, u32> = FxHashMap::default();
        let mut triples = FxHashMap::default();
        let mut angle = AngleTrie::default();
        let mut chars: Vec<u32> = Vec::with_capacity(4);
        for (spelling, id) in vocab.iter_map() {
            chars.clear();
            chars.extend(spelling.chars().map(|c| c as u32));
            if chars[0] == '<' as u32 && chars.len() > 2 {
                angle.insert(spelling, id);
                continue;
            }
            match chars.len() {
                1 => {
                    let e = singles.get_mut(chars[0]);
                    *e = (*e & HAS_LONGER) | id;
                }
                2 => {
                    let e = singles.get_mut(chars[0]);
                    *e = (*e & ID_MASK) | HAS_LONGER;
                    let p = pairs.entry(pack2(chars[0], chars[1])).or_insert(ID_MASK);
                    *p = (*p & HAS_LONGER) | id;
                }
                3 => {
                    let e = singles.get_mut(chars[0]);
                    *e = (*e & ID_MASK) | HAS_LONGER;
                    let p = pairs.entry(pack2(chars[0], chars[1])).or_insert(ID_MASK);
                    *p |= HAS_LONGER;
                    triples.insert(pack3(chars[0], chars[1], chars[2]), id);
                }
                // Longer spellings can never be looked up by the reference (its window is
                // three characters unless the first one is `<`).
                _ => {}
            }
        }
        let lookup = |s: &str| vocab.id(s).expect("Vocab::from_entries checked it");
        // Bytes that never occur in UTF-8 may be missing; they are never looked up.
        let mut bytes = [0u32; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = vocab.id(&format!("<|byte{b}|>")).unwrap_or(0);
        }
        Segmenter {
            singles,
            pairs,
            triples,
            angle,
            fallback: Fallback {
                kigou: lookup("<KIGOU>"),
                u2000u2bff: lookup("<U2000U2BFF>"),
                bytes,
            },
        }
    }

    /// Appends the ids of `text` (code points) to `out`.
    pub(crate) fn segment(&self, text: &[u32], out: &mut Vec<u32>) {
        let n = text.len();
        let mut pos = 0;
        while pos < n {
            let c1 = text[pos];
            if c1 == '<' as u32 {
                if let Some((id, len)) = self.angle.longest(&text[pos..]) {
                    out.push(id);
                    pos += len;
                    continue;
                }
            }
            let single = self.singles.get(c1);
            let mut best = NONE;
            let mut len = 1;
            if single & HAS_LONGER != 0 && pos + 1 < n {
                if let Some(&pair) = self.pairs.get(&pack2(c1, text[pos + 1])) {
                    if pair & HAS_LONGER != 0 && pos + 2 < n {
                        if let Some(&id) =
                            self.triples.get(&pack3(c1, text[pos + 1], text[pos + 2]))
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

/// The 2-byte UTF-8 symbols the reference maps to `<KIGOU>` (byte pairs C2A1-C2BF,
/// C780-C783, CAB9-CBBF, CC80-CDA2).
#[inline]
pub(crate) fn is_kigou(c: u32) -> bool {
    matches!(c, 0xa1..=0xbf | 0x1c0..=0x1c3 | 0x2b9..=0x2ff | 0x300..=0x362)
}
