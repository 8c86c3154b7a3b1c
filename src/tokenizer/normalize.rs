//! Pre-replacements (section 3 step 1) done in one pass.
//!
//! The reference calls `str.replace` eight times, in this order: space and U+3000 -> `<SP>`;
//! CRLF, LF, CR -> `<BR>`; tab -> `<TAB>`; U+2014 and U+2212 -> `ー`. None of the outputs
//! contains a character a later rule looks for, so one left-to-right pass (CR followed by
//! LF counts once) gives the same text.

/// Calls `emit` for every character of the pre-replaced `text`.
#[inline]
pub fn prereplace(text: &str, mut emit: impl FnMut(char)) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\u{3000}' => "<SP>".chars().for_each(&mut emit),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                "<BR>".chars().for_each(&mut emit);
            }
            '\n' => "<BR>".chars().for_each(&mut emit),
            '\t' => "<TAB>".chars().for_each(&mut emit),
            '\u{2014}' | '\u{2212}' => emit('ー'),
            c => emit(c),
        }
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
    }
}
