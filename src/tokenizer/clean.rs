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
/// proves it would not. Every pattern needs one of these characters: URL `://`, EMAIL
/// `@`, TEL and the western date ASCII digits, the era date `年`, PRICE `円`, `ドル` or
/// `ユーロ`; `<BLOCK>` needs a block character or `<BLOCK><BLOCK>` (hence `K><`).
pub fn may_change(cps: &[u32]) -> bool {
    const K: u32 = 'K' as u32;
    cps.iter().enumerate().any(|(i, &c)| match c {
        0x30..=0x3a | 0x40 => true, // digits, ':' and '@'
        0x2500..=0x259f => true,
        0x5e74 | 0x5186 | 0x30c9 | 0x30e6 => true, // 年 円 ド ユ
        K => cps.get(i + 1) == Some(&('>' as u32)) && cps.get(i + 2) == Some(&('<' as u32)),
        _ => false,
    })
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
        ];
        for t in texts {
            let cps: Vec<u32> = t.chars().map(|c| c as u32).collect();
            if !may_change(&cps) {
                assert_eq!(clean(t.to_string()), t, "{t}");
            } else {
                assert!(!t.starts_with('吾'), "{t}");
            }
        }
    }

    #[test]
    fn block_runs_collapse() {
        assert_eq!(clean("a──━b▀<BLOCK>c".into()), "a<BLOCK>b<BLOCK>c");
        assert_eq!(clean("<BLOCK><BLOCK><BLOCK>".into()), "<BLOCK>");
    }
}
