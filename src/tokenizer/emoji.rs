//! The emoji table (`emoji.json`) and the emoji replacement step of encoding.
//!
//! The reference replaces every key of `emoji` by its token string, one key after the other
//! in file order (`str.replace` per key). Doing that literally costs one scan per key
//! (4,000+ keys). We get the same result faster: an Aho-Corasick automaton finds which keys
//! occur at all, and only those are replaced, still in file order. This is exact as long as
//! a replacement can never create a new occurrence of a key; `EmojiTable::new` checks that
//! for the loaded table and otherwise falls back to the literal algorithm.

use std::path::Path;

use aho_corasick::{AhoCorasick, MatchKind};
use anyhow::{Context, Result};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Characters the pre-replacement step removes: a key containing one can never match.
const REPLACED_BEFORE: [char; 7] = [' ', '\u{3000}', '\r', '\n', '\t', '\u{2014}', '\u{2212}'];

/// The parsed emoji table plus what fast replacement needs.
#[derive(Debug, Clone)]
pub struct EmojiTable {
    /// `emoji` in file order: (emoji text, token string).
    pairs: Vec<(String, String)>,
    /// `emoji_inv`: token string -> representative emoji.
    inv: Vec<(String, String)>,
    /// Indices into `pairs` of keys that can still match after pre-replacement.
    live: Vec<usize>,
    /// Finds live keys (pattern i = `pairs[live[i]]`).
    finder: Option<AhoCorasick>,
    /// One "trigger" character per live key: if no character of a text is a trigger,
    /// no key occurs and the automaton is skipped.
    triggers: CharSet,
    /// True when replacements cannot create new key occurrences (see module doc).
    fast_ok: bool,
    /// Longest live key, in bytes.
    max_key_len: usize,
    /// Longest live key, in characters.
    max_key_chars: usize,
}

/// Largest char boundary <= i.
fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Smallest char boundary >= i (at most `s.len()`).
fn ceil_char(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// A set of chars: a flat bitmap for the BMP (8 KB, stays in L1) and a sorted list above.
#[derive(Debug, Clone)]
pub(crate) struct CharSet {
    bmp: Box<[u64; 1024]>,
    astral: Vec<char>,
}

impl Default for CharSet {
    fn default() -> Self {
        CharSet {
            bmp: Box::new([0u64; 1024]),
            astral: Vec::new(),
        }
    }
}

impl CharSet {
    pub(crate) fn insert(&mut self, c: char) {
        let u = c as usize;
        if u < 0x10000 {
            self.bmp[u >> 6] |= 1u64 << (u & 63);
        } else if let Err(i) = self.astral.binary_search(&c) {
            self.astral.insert(i, c);
        }
    }

    #[inline]
    pub(crate) fn contains(&self, c: char) -> bool {
        let u = c as usize;
        if u < 0x10000 {
            self.bmp[u >> 6] & (1u64 << (u & 63)) != 0
        } else {
            self.astral.binary_search(&c).is_ok()
        }
    }
}

/// JSON object read in file order (Python dicts keep insertion order; serde maps do not).
struct OrderedPairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedPairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedPairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                let mut seen = rustc_hash::FxHashMap::default();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    // A repeated key keeps its first position and takes the last value,
                    // as a Python dict does.
                    if let Some(&i) = seen.get(&k) {
                        out[i] = (k, v);
                    } else {
                        seen.insert(k.clone(), out.len());
                        out.push((k, v));
                    }
                }
                Ok(OrderedPairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct EmojiFile {
    emoji: OrderedPairs,
    emoji_inv: OrderedPairs,
}

impl EmojiTable {
    /// Reads `emoji.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading emoji table {}", path.display()))?;
        Self::from_json(&bytes, &path.display().to_string())
    }

    /// Parses the JSON text of an emoji table; `origin` names it in errors.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Self> {
        let file: EmojiFile = serde_json::from_slice(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{origin}: line {} column {}: {e} (expected {{\"emoji\": {{...}}, \"emoji_inv\": {{...}}}})",
                e.line(),
                e.column()
            )
        })?;
        Self::new(file.emoji.0, file.emoji_inv.0)
    }

    /// Builds a table from `emoji` pairs (in priority order) and `emoji_inv` pairs.
    pub fn new(pairs: Vec<(String, String)>, inv: Vec<(String, String)>) -> Result<Self> {
        let live: Vec<usize> = (0..pairs.len())
            .filter(|&i| {
                let k = &pairs[i].0;
                !k.is_empty() && !k.contains(REPLACED_BEFORE)
            })
            .collect();
        let mut triggers = CharSet::default();
        for &i in &live {
            triggers.insert(trigger_char(&pairs[i].0));
        }
        let finder = if live.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(live.iter().map(|&i| pairs[i].0.as_str()))
                    .context("building the emoji matcher")?,
            )
        };
        let mut tokens: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
        tokens.sort_unstable();
        tokens.dedup();
        let fast_ok = live.iter().all(|&i| {
            let key = &pairs[i].0;
            tokens.iter().all(|v| !can_create_match(key, v))
        });
        if !fast_ok {
            tracing::info!("emoji table: keys overlap token strings; using literal replacement");
        }
        let max_key_len = live.iter().map(|&i| pairs[i].0.len()).max().unwrap_or(0);
        let max_key_chars = live
            .iter()
            .map(|&i| pairs[i].0.chars().count())
            .max()
            .unwrap_or(0);
        Ok(EmojiTable {
            max_key_len,
            max_key_chars,
            pairs,
            inv,
            live,
            finder,
            triggers,
            fast_ok,
        })
    }

    /// An empty table (no emoji replacement; emoji fall back to bytes).
    pub fn empty() -> Self {
        Self::new(Vec::new(), Vec::new()).expect("an empty table always builds")
    }

    /// `emoji` pairs in file order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The representative emoji of a token string such as `<|emoji3|>`.
    pub fn representative(&self, token: &str) -> Option<&str> {
        self.inv
            .iter()
            .find(|(k, _)| k == token)
            .map(|(_, v)| v.as_str())
    }

    /// The table as JSON (same layout as `emoji.json`).
    pub fn to_json(&self) -> String {
        fn obj(pairs: &[(String, String)]) -> String {
            let items: Vec<String> = pairs
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}: {}",
                        serde_json::Value::String(k.clone()),
                        serde_json::Value::String(v.clone())
                    )
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        format!(
            "{{\"emoji\": {}, \"emoji_inv\": {}}}",
            obj(&self.pairs),
            obj(&self.inv)
        )
    }

    /// Whether a character could start work for this table (cheap test per character).
    #[inline]
    pub(crate) fn is_trigger(&self, c: char) -> bool {
        self.triggers.contains(c)
    }

    /// Whether some key occurs in `cps` (code points) around one of the `triggers`
    /// positions. Exact: every occurrence contains its key's trigger character.
    pub(crate) fn any_key_near(&self, cps: &[u32], triggers: &[usize]) -> bool {
        let Some(finder) = self.finder.as_ref() else {
            return false;
        };
        let reach = self.max_key_chars;
        let mut window = String::new();
        let mut i = 0;
        while i < triggers.len() {
            let lo = triggers[i].saturating_sub(reach);
            let mut hi = (triggers[i] + reach + 1).min(cps.len());
            // Merge triggers whose windows overlap.
            while i + 1 < triggers.len() && triggers[i + 1].saturating_sub(reach) <= hi {
                i += 1;
                hi = (triggers[i] + reach + 1).min(cps.len());
            }
            window.clear();
            window.extend(cps[lo..hi].iter().filter_map(|&c| char::from_u32(c)));
            if finder.is_match(window.as_str()) {
                return true;
            }
            i += 1;
        }
        false
    }

    /// Replaces emoji keys in `text` as the reference does. Returns `None` when nothing
    /// changed (the common case), so callers can keep their buffer.
    pub fn replace(&self, text: &str) -> Option<String> {
        let finder = self.finder.as_ref()?;
        if !self.fast_ok {
            return self.replace_literal(text);
        }
        // Every occurrence of a key contains that key's trigger character, so it lies
        // within `max_key_len` bytes of a trigger: search only those windows.
        let mut found: Vec<usize> = Vec::new();
        let mut window: Option<(usize, usize)> = None;
        let search = |(lo, hi): (usize, usize), found: &mut Vec<usize>| {
            let slice = &text[floor_char(text, lo)..ceil_char(text, hi)];
            found.extend(
                finder
                    .find_overlapping_iter(slice)
                    .map(|m| self.live[m.pattern().as_usize()]),
            );
        };
        for (i, c) in text.char_indices() {
            if !self.triggers.contains(c) {
                continue;
            }
            let lo = i.saturating_sub(self.max_key_len);
            let hi = (i + c.len_utf8() + self.max_key_len).min(text.len());
            window = match window {
                Some((wlo, whi)) if lo <= whi => Some((wlo, hi.max(whi))),
                Some(w) => {
                    search(w, &mut found);
                    Some((lo, hi))
                }
                None => Some((lo, hi)),
            };
        }
        if let Some(w) = window {
            search(w, &mut found);
        }
        if found.is_empty() {
            return None;
        }
        found.sort_unstable();
        found.dedup();
        let mut out = text.to_string();
        for i in found {
            let (k, v) = &self.pairs[i];
            if out.contains(k.as_str()) {
                out = out.replace(k.as_str(), v);
            }
        }
        Some(out)
    }

    /// The reference algorithm, one key at a time.
    fn replace_literal(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for &i in &self.live {
            let (k, v) = &self.pairs[i];
            let cur = out.as_deref().unwrap_or(text);
            if cur.contains(k.as_str()) {
                out = Some(cur.replace(k.as_str(), v));
            }
        }
        out
    }
}

/// Could replacing some text by `token` create a new occurrence of `key`? Only if the key
/// overlaps the token at one of its ends or contains it whole, or the token contains the key.
fn can_create_match(key: &str, token: &str) -> bool {
    // Any overlap shares a character (most keys share none with `<|emojiN|>`).
    if !key.chars().any(|c| token.contains(c)) {
        return false;
    }
    if token.contains(key) || key.contains(token) {
        return true;
    }
    // Every split of the token into a non-empty head and tail.
    token.char_indices().skip(1).any(|(i, _)| {
        let (head, tail) = token.split_at(i);
        key.ends_with(head) || key.starts_with(tail)
    })
}

/// The character of a key least likely to occur in ordinary text: the trigger test then
/// rarely fires on text without emoji. (Correctness does not depend on this choice.)
fn trigger_char(key: &str) -> char {
    fn rarity(c: char) -> u32 {
        match c {
            c if c.is_ascii_alphanumeric() => 0,
            ' ' | '(' | ')' | '.' | ',' | '-' | '/' | ':' | '!' | '?' | '\'' | '"' => 0,
            // Japanese punctuation, kana, CJK ideographs, full-width forms: common.
            '\u{3000}'..='\u{30ff}' | '\u{4e00}'..='\u{9fff}' | '\u{ff00}'..='\u{ffef}' => 0,
            c if c.is_ascii() => 1,
            _ => 2,
        }
    }
    key.chars()
        .max_by_key(|&c| (rarity(c), c as u32))
        .unwrap_or('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, &str)]) -> EmojiTable {
        let pairs = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EmojiTable::new(pairs, vec![("<|emoji1|>".into(), "😀".into())]).unwrap()
    }

    #[test]
    fn earlier_keys_take_priority_like_sequential_replace() {
        // "BC" is replaced first, so "AB" no longer occurs.
        let t = table(&[("☆BC", "<|emoji1|>"), ("A☆B", "<|emoji2|>")]);
        assert_eq!(t.replace("A☆BC").as_deref(), Some("A<|emoji1|>"));
        let t = table(&[("A☆B", "<|emoji2|>"), ("☆BC", "<|emoji1|>")]);
        assert_eq!(t.replace("A☆BC").as_deref(), Some("<|emoji2|>C"));
    }

    #[test]
    fn keys_with_spaces_never_match() {
        let t = table(&[("m(_ _)m", "<|emoji1|>")]);
        assert!(t.live.is_empty());
        assert_eq!(t.replace("m(_ _)m"), None);
    }

    #[test]
    fn overlapping_keys_force_literal_mode() {
        let t = table(&[("|>x", "<|emoji1|>")]);
        assert!(!t.fast_ok);
        assert_eq!(t.replace("a|>x").as_deref(), Some("a<|emoji1|>"));
    }

    mod against_literal {
        use super::super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        /// The original 36K vocabulary's emoji table (from ../shared).
        fn original() -> &'static EmojiTable {
            static T: OnceLock<EmojiTable> = OnceLock::new();
            T.get_or_init(|| {
                let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../shared/gptsan-vocab/emoji.json");
                EmojiTable::from_file(&p).expect("read ../shared/gptsan-vocab/emoji.json")
            })
        }

        /// Texts made of emoji keys, pieces of keys and filler characters.
        fn text() -> impl Strategy<Value = String> {
            let t = original();
            let n = t.pairs.len();
            let piece = prop_oneof![
                (0..n).prop_map(move |i| t.pairs[i].0.clone()),
                (0..n, 0usize..4).prop_map(move |(i, k)| {
                    t.pairs[i].0.chars().skip(k).take(2).collect::<String>()
                }),
                "[あ-んa-z()^_;・。人ー<>|0-9]{0,6}",
            ];
            proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

            #[test]
            fn fast_replacement_equals_sequential_replacement(t in text()) {
                let table = original();
                prop_assert!(table.fast_ok);
                let norm = crate::tokenizer::normalize::prereplace_string(&t);
                let literal = table.replace_literal(&norm);
                prop_assert_eq!(table.replace(&norm), literal.clone());
                // The pre-check on code points agrees with the string search.
                let cps: Vec<u32> = norm.chars().map(|c| c as u32).collect();
                let triggers: Vec<usize> = norm
                    .chars()
                    .enumerate()
                    .filter(|(_, c)| table.is_trigger(*c))
                    .map(|(i, _)| i)
                    .collect();
                prop_assert_eq!(table.any_key_near(&cps, &triggers), literal.is_some());
            }
        }
    }
}
