//! Optional cleaning (section 3 step 2): URLs, e-mail addresses, phone numbers, dates and
//! prices become placeholder tokens, box-drawing and block characters become `<BLOCK>`.
//!
//! The patterns are the reference encoder's, rewritten in `regex` syntax (same meaning:
//! `regex` reports the same leftmost-first matches as Python's backtracking `re`, and `\d`
//! is Unicode `Nd` in both). They are applied one after the other, each on the output of
//! the previous one, exactly as the reference does. Compiled once per process.

use std::sync::OnceLock;

use regex::Regex;

/// Weekday marks and times that may follow a date.
const DATE_TAIL: &str = r"(\d{1,2}|:|\d{1,2}時|\d{1,2}分|\(日\)|\(月\)|\(火\)|\(水\)|\(木\)|\(金\)|\(土\)|㈰|㈪|㈫|㈬|㈭|㈮|㈯)*";

/// A number as the price pattern writes it: `0`, digits, or digits with thousands commas.
const PRICE_NUMBER: &str = r"(0|[1-9]\d*|[1-9]\d{0,2}(,\d{3})+)";

struct Patterns {
    url: Regex,
    email: Regex,
    tel: Regex,
    date_western: Regex,
    date_era: Regex,
    price: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let n = PRICE_NUMBER;
        let compile = |p: &str| Regex::new(p).expect("built-in clean pattern compiles");
        Patterns {
            url: compile(r"(https?|ftp)(://[-_.!~*'()a-zA-Z0-9;/?:@&=+$,%#]+)"),
            email: compile(r"[A-Za-z0-9._+]*@[-_0-9A-Za-z]+(\.[A-Za-z]+)*"),
            tel: compile(r"[(]?[0-9]{2,4}[)\-(]?[0-9]{2,4}[)\-]?[0-9]{3,4}"),
            date_western: compile(&format!(
                r"([12]\d{{3}}[/\-年])*(0?[1-9]|1[0-2])[/\-月]((0?[1-9]|[12][0-9]|3[01])日?)*{DATE_TAIL}"
            )),
            date_era: compile(&format!(
                r"(明治|大正|昭和|平成|令和|㍾|㍽|㍼|㍻|\x{{32ff}})\d{{1,2}}年(0?[1-9]|1[0-2])月(0?[1-9]|[12][0-9]|3[01])日{DATE_TAIL}"
            )),
            price: compile(&format!(
                r"({n}*億)*({n}*万)*({n}*千)*{n}*(千円|万円|千万円|円|千ドル|万ドル|千万ドル|ドル|千ユーロ|万ユーロ|千万ユーロ|ユーロ)+(\(税込\)|\(税抜\)|\+tax)*"
            )),
        }
    })
}

/// Box drawing U+2500-U+257F and block elements U+2580-U+259F (the reference's two lists).
#[inline]
fn is_block(c: char) -> bool {
    ('\u{2500}'..='\u{259f}').contains(&c)
}

/// Applies one pattern, skipping the regex when a cheap test proves it cannot match.
fn sub(text: String, re: &Regex, possible: bool, with: &str) -> String {
    if !possible {
        return text;
    }
    match re.replace_all(&text, with) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(s) => s,
    }
}

/// Whether [`clean`] could change this pre-replaced text (given as code points): false
/// proves it would not. Every pattern needs one of these: URL `://`, EMAIL `@`, TEL and
/// the western date ASCII digits, the era date an era name (明治 大正 昭和 平成 令和 or one
/// of ㍾ ㍽ ㍼ ㍻ ㋿) and `年`, PRICE `円`, `ドル` or `ユーロ` (its number is optional);
/// `<BLOCK>` needs a block character or `<BLOCK><BLOCK>` (hence `K><`). While none of them
/// matches the text is unchanged, so no later pattern sees a text an earlier one made.
///
/// The test only asks whether the text contains some strings, so when it is false for a
/// text it is false for every piece of it too (`Tokenizer::prefixes` relies on this).
pub fn may_change(cps: &[u32]) -> bool {
    // Whether the text names an era, worked out at the first 年 (novels have many).
    let mut era = None;
    cps.iter().enumerate().any(|(i, &c)| {
        // One bit test for most characters; the few that begin a string look further.
        if c >= 0x10000 || FIRST[c as usize >> 6] >> (c & 63) & 1 == 0 {
            return false;
        }
        match c == '年' as u32 {
            true => *era.get_or_insert_with(|| names_era(cps)),
            false => may_change_at(cps, i),
        }
    })
}

/// The first characters of the strings [`may_change`] looks for, one bit per code point of
/// the Basic Multilingual Plane (none is outside it).
static FIRST: [u64; 1024] = first_chars();

const fn first_chars() -> [u64; 1024] {
    let mut bits = [0u64; 1024];
    let singles = [
        '@', '円', 'ド', 'ユ', 'K', '年', '㍾', '㍽', '㍼', '㍻', '\u{32ff}', '明', '大', '昭',
        '平', '令',
    ];
    let mut i = 0;
    while i < singles.len() {
        let c = singles[i] as usize;
        bits[c >> 6] |= 1 << (c & 63);
        i += 1;
    }
    let ranges = [('0', ':'), ('\u{2500}', '\u{259f}')];
    let mut r = 0;
    while r < ranges.len() {
        let mut c = ranges[r].0 as usize;
        while c <= ranges[r].1 as usize {
            bits[c >> 6] |= 1 << (c & 63);
            c += 1;
        }
        r += 1;
    }
    bits
}

/// Era names of the era date pattern.
const ERAS: [&str; 5] = ["明治", "大正", "昭和", "平成", "令和"];

/// Whether `s` starts at `cps[i]`.
fn starts_at(cps: &[u32], i: usize, s: &str) -> bool {
    s.chars()
        .enumerate()
        .all(|(k, c)| cps.get(i + k) == Some(&(c as u32)))
}

/// Whether an era name (or a one-character era sign) starts at `cps[i]`.
fn era_at(cps: &[u32], i: usize) -> bool {
    match char::from_u32(cps[i]) {
        Some('㍾' | '㍽' | '㍼' | '㍻' | '\u{32ff}') => true,
        Some('明' | '大' | '昭' | '平' | '令') => {
            ERAS.iter().any(|name| starts_at(cps, i, name))
        }
        _ => false,
    }
}

fn names_era(cps: &[u32]) -> bool {
    (0..cps.len()).any(|i| era_at(cps, i))
}

/// Whether one of the strings [`may_change`] looks for (other than `年`) starts at
/// `cps[i]`; an era name counts only with a `年` anywhere in the text.
fn may_change_at(cps: &[u32], i: usize) -> bool {
    match char::from_u32(cps[i]).unwrap_or('\0') {
        '0'..=':' | '@' | '\u{2500}'..='\u{259f}' | '円' => true,
        'ド' => starts_at(cps, i, "ドル"),
        'ユ' => starts_at(cps, i, "ユーロ"),
        'K' => starts_at(cps, i, "K><"),
        _ => era_at(cps, i) && cps.contains(&('年' as u32)),
    }
}

/// Cleans a pre-replaced text the way the reference's `clean_text` does.
pub fn clean(text: String) -> String {
    let p = patterns();
    let text = sub(text, &p.url, true, "<URL>");
    let text = {
        let has_at = text.contains('@');
        sub(text, &p.email, has_at, "<EMAIL>")
    };
    // TEL and the western date need ASCII digits.
    let text = {
        let digits = text.bytes().any(|b| b.is_ascii_digit());
        sub(text, &p.tel, digits, "<TEL>")
    };
    let text = {
        let digits = text.bytes().any(|b| b.is_ascii_digit());
        sub(text, &p.date_western, digits, "<DATE>")
    };
    let text = {
        let era = text.contains('年');
        sub(text, &p.date_era, era, "<DATE>")
    };
    let text = {
        let unit = text.contains('円') || text.contains("ドル") || text.contains("ユーロ");
        sub(text, &p.price, unit, "<PRICE>")
    };
    blocks(text)
}

/// Every block character becomes `<BLOCK>`, then runs of `<BLOCK>` (including ones that
/// were in the text literally) collapse to one.
fn blocks(text: String) -> String {
    if !text.chars().any(is_block) && !text.contains("<BLOCK><BLOCK>") {
        return text;
    }
    let mut translated = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_block(c) {
            translated.push_str("<BLOCK>");
        } else {
            translated.push(c);
        }
    }
    const B: &str = "<BLOCK>";
    let mut out = String::with_capacity(translated.len());
    let mut rest = translated.as_str();
    while let Some(i) = rest.find(B) {
        out.push_str(&rest[..i]);
        out.push_str(B);
        rest = &rest[i + B.len()..];
        while let Some(r) = rest.strip_prefix(B) {
            rest = r;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(clean("see https://a.b/c?d=1 ok".into()), "see <URL> ok");
        assert_eq!(clean("mail a.b@c.co.jp!".into()), "mail <EMAIL>!");
        assert_eq!(clean("tel 03-1234-5678.".into()), "tel <TEL>.");
        assert_eq!(clean("2023年4月1日(土)に".into()), "<DATE>に");
        // The western pattern runs first and takes the month and day (as the reference).
        assert_eq!(clean("令和5年4月1日です".into()), "令和5年<DATE>です");
        assert_eq!(clean("1,980円(税込)です".into()), "<PRICE>です");
    }

    #[test]
    fn may_change_is_false_only_for_texts_clean_keeps() {
        let texts = [
            "see https://a.b/c ok",
            "a.b@c.co.jp",
            "03-1234-5678",
            "2023年4月1日",
            "令和5年",
            "1,980円",
            "5ドル",
            "3ユーロ",
            "a──b",
            "<BLOCK><BLOCK>",
            "吾輩は猫である。<SP>名前はまだ無い",
            "１２３４年",
            "KO<BLOCK>",
            "少年はドアを開けた。ユニークな家",
            "大正の家",
            "昭和のはじめ、少年は",
            "平成3年4月1日",
            "㍻3年4月1日",
            "ドル",
            "ユーロ",
            "円",
        ];
        for t in texts {
            let cps: Vec<u32> = t.chars().map(|c| c as u32).collect();
            if !may_change(&cps) {
                assert_eq!(clean(t.to_string()), t, "{t}");
            } else {
                assert!(!t.starts_with('吾') && !t.starts_with('少'), "{t}");
            }
        }
    }

    #[test]
    fn block_runs_collapse() {
        assert_eq!(clean("a──━b▀<BLOCK>c".into()), "a<BLOCK>b<BLOCK>c");
        assert_eq!(clean("<BLOCK><BLOCK><BLOCK>".into()), "<BLOCK>");
    }
}
