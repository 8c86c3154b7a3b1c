//! Decoding ids to text.
//!
//! Each id decodes to its first spelling, except: byte tokens (consecutive ones are joined
//! and decoded as UTF-8, invalid sequences become U+FFFD), emoji tokens (the table's
//! representative emoji), and the layout/symbol tokens `<SP>` `<BR>` `<TAB>` `<BLOCK>`
//! `<KIGOU>` `<U2000U2BFF>`. What each id decodes to is worked out once, at load time.

use super::emoji::EmojiTable;
use super::vocab::Vocab;

/// How one id decodes.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    /// One byte of a UTF-8 sequence.
    Byte(u8),
    /// `<BR>`: the line break of the decode options.
    LineBreak,
    /// `<|bagoftoken|>`: literal, or the previous piece repeated when expanding.
    Bag,
    /// Any other special token `<|...|>` (dropped when decoding generated text).
    Special(Box<str>),
    /// Plain text.
    Text(Box<str>),
}

/// Decoding choices. `Default` is the reference encoder's `decode`.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// What `<BR>` becomes (the reference's `breakline`, default `\n`).
    pub line_break: String,
    /// Expand `<|bagoftoken|>` to the previous piece repeated three times (the Hugging Face
    /// port does this for generated text; the reference encoder leaves it literal).
    pub expand_bag: bool,
    /// Drop other `<|...|>` special tokens (the port's generation decode does).
    pub drop_special: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            line_break: "\n".to_string(),
            expand_bag: false,
            drop_special: false,
        }
    }
}

impl DecodeOptions {
    /// The Hugging Face port's choices for generated text: BAG expanded, specials dropped.
    pub fn generated() -> Self {
        DecodeOptions {
            expand_bag: true,
            drop_special: true,
            ..Self::default()
        }
    }
}

/// Works out the piece of every id.
pub(crate) fn pieces(vocab: &Vocab, emoji: &EmojiTable) -> Vec<Piece> {
    let bag = vocab.special().bag;
    (0..vocab.len() as u32)
        .map(|id| {
            let word = vocab.first_spelling(id).unwrap_or_default();
            if id == bag {
                return Piece::Bag;
            }
            if let Some(n) = word
                .strip_prefix("<|byte")
                .and_then(|w| w.strip_suffix("|>"))
            {
                if let Ok(b) = n.parse::<u8>() {
                    if n.bytes().all(|d| d.is_ascii_digit()) {
                        return Piece::Byte(b);
                    }
                }
            }
            if word.starts_with("<|emoji") && word.ends_with("|>") && word.len() >= 9 {
                // A token the table does not know stays literal (the reference would fail).
                let text = emoji.representative(word).unwrap_or(word);
                return Piece::Text(text.into());
            }
            let text = match word {
                "<SP>" => " ",
                "<BR>" => return Piece::LineBreak,
                "<TAB>" => "\t",
                "<BLOCK>" => "▀",
                "<KIGOU>" => "ǀ",
                "<U2000U2BFF>" => "‖",
                w if w.starts_with("<|") && w.ends_with("|>") && w.len() >= 4 => {
                    return Piece::Special(w.into())
                }
                w => w,
            };
            Piece::Text(text.into())
        })
        .collect()
}

/// Decodes ids; `Err(index)` names the first id that is out of range.
pub(crate) fn decode(pieces: &[Piece], ids: &[u32], opts: &DecodeOptions) -> Result<String, usize> {
    let mut out = String::with_capacity(ids.len() * 3);
    let mut bytes: Vec<u8> = Vec::new();
    // Start of the last piece written to `out` (what BAG repeats).
    let mut last: Option<std::ops::Range<usize>> = None;
    let flush =
        |out: &mut String, bytes: &mut Vec<u8>, last: &mut Option<std::ops::Range<usize>>| {
            if !bytes.is_empty() {
                let start = out.len();
                out.push_str(&String::from_utf8_lossy(bytes));
                *last = Some(start..out.len());
                bytes.clear();
            }
        };
    for (i, &id) in ids.iter().enumerate() {
        let piece = pieces.get(id as usize).ok_or(i)?;
        if let Piece::Byte(b) = piece {
            bytes.push(*b);
            continue;
        }
        flush(&mut out, &mut bytes, &mut last);
        let start = out.len();
        match piece {
            Piece::Byte(_) => {}
            Piece::LineBreak => out.push_str(&opts.line_break),
            Piece::Text(t) => out.push_str(t),
            Piece::Special(t) => {
                if !opts.drop_special {
                    out.push_str(t)
                }
            }
            Piece::Bag => {
                if opts.expand_bag {
                    if let Some(r) = last.clone() {
                        let prev = out[r].to_string();
                        for _ in 0..3 {
                            out.push_str(&prev);
                        }
                        // The port appends the previous word three times as three words;
                        // the last of them is what a following BAG repeats.
                        last = Some(out.len() - prev.len()..out.len());
                    }
                    continue;
                } else if !opts.drop_special {
                    out.push_str("<|bagoftoken|>");
                }
            }
        }
        last = Some(start..out.len());
    }
    flush(&mut out, &mut bytes, &mut last);
    Ok(out)
}
