//! Pre-replacements (section 3 step 1) done in one pass.
//!
//! The reference calls `str.replace` eight times, in this order: space and U+3000 -> `<SP>`;
//! CRLF, LF, CR -> `<BR>`; tab -> `<TAB>`; U+2014 and U+2212 -> `ー`. None of the outputs
//! contains a character a later rule looks for, so one left-to-right pass (CR followed by
//! LF counts once) gives the same text.

/// Calls `emit` for every character of the pre-replaced `text`.
#[inline]
pub fn prereplace(text: &str, emit: impl FnMut(char)) {
    prereplace_marking(text, emit, || {});
}

/// [`prereplace`], calling `end` after the output of each character of `text` (twice
/// after CR LF, which is one line break).
#[inline]
pub fn prereplace_marking(text: &str, mut emit: impl FnMut(char), mut end: impl FnMut()) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\u{3000}' => "<SP>".chars().for_each(&mut emit),
            '\r' => {
                "<BR>".chars().for_each(&mut emit);
                if chars.peek() == Some(&'\n') {
                    chars.next();
                    end();
                }
            }
            '\n' => "<BR>".chars().for_each(&mut emit),
            '\t' => "<TAB>".chars().for_each(&mut emit),
            '\u{2014}' | '\u{2212}' => emit('ー'),
            c => emit(c),
        }
        end();
    }
}

/// The pre-replaced text as a `String`.
pub fn prereplace_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    prereplace(text, |c| out.push(c));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements() {
        assert_eq!(
            prereplace_string("a b\u{3000}c\r\nd\ne\rf\tg\u{2014}\u{2212}"),
            "a<SP>b<SP>c<BR>d<BR>e<BR>f<TAB>gーー"
        );
        assert_eq!(prereplace_string("\r\r\n\n"), "<BR><BR><BR>");
        let (n, mut ends) = (std::cell::Cell::new(0), Vec::new());
        prereplace_marking("a \r\nb", |_| n.set(n.get() + 1), || ends.push(n.get()));
        assert_eq!(ends, vec![1, 5, 9, 9, 10]);
    }
}
