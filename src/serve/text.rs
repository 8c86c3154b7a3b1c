//! Generated text as it grows: the deltas a stream may send, cut at stop sequences.
//!
//! Text is decoded from all generated tokens each time (a token can end a multi-byte
//! character begun by an earlier one), and a delta is held back while its end may still
//! change: an unfinished character (U+FFFD) or the start of a stop sequence.

/// The text of one choice, as far as it has been sent.
#[derive(Debug, Default)]
pub struct TextStream {
    stops: Vec<String>,
    shown: String,
}

/// What a new token changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Update {
    /// Text not sent before (possibly empty).
    pub delta: String,
    /// A stop sequence appeared: the choice ends before it.
    pub stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> TextStream {
        TextStream {
            stops,
            shown: String::new(),
        }
    }

    /// Everything sent so far (the choice's text once it has finished).
    pub fn text(&self) -> &str {
        &self.shown
    }

    /// Takes the decoded text of every token so far; `last`: no token follows.
    pub fn update(&mut self, full: &str, last: bool) -> Update {
        let (visible, stopped) = match self.first_stop(full) {
            Some(at) => (&full[..at], true),
            None if last => (full, false),
            None => (self.settled(full), false),
        };
        let mut delta = String::new();
        if visible.len() > self.shown.len() && visible.starts_with(&self.shown) {
            delta = visible[self.shown.len()..].to_string();
            self.shown = visible.to_string();
        }
        Update { delta, stopped }
    }

    /// Byte offset of the earliest stop sequence in `text`.
    fn first_stop(&self, text: &str) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
    }

    /// `text` less an unfinished character and a tail that may begin a stop sequence.
    fn settled<'t>(&self, text: &'t str) -> &'t str {
        let text = match text.find('\u{FFFD}') {
            Some(at) if text[at..].chars().all(|c| c == '\u{FFFD}') => &text[..at],
            _ => text,
        };
        let held = text.char_indices().map(|(i, _)| i).find(|&i| {
            self.stops
                .iter()
                .any(|s| s.len() > text.len() - i && s.starts_with(&text[i..]))
        });
        &text[..held.unwrap_or(text.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_concatenate_to_the_text() {
        let mut t = TextStream::new(vec![]);
        assert_eq!(t.update("こん", false).delta, "こん");
        assert_eq!(t.update("こんにちは", false).delta, "にちは");
        assert_eq!(t.update("こんにちは", true).delta, "");
        assert_eq!(t.text(), "こんにちは");
    }

    #[test]
    fn unfinished_characters_wait() {
        let mut t = TextStream::new(vec![]);
        assert_eq!(t.update("a\u{FFFD}", false).delta, "a");
        assert_eq!(t.update("aé", false).delta, "é");
    }

    #[test]
    fn stop_sequences_cut_and_are_held_back() {
        let mut t = TextStream::new(vec!["END".into()]);
        assert_eq!(t.update("abE", false).delta, "ab");
        assert_eq!(t.update("abEN", false).delta, "");
        let u = t.update("abENDx", false);
        assert_eq!(
            u,
            Update {
                delta: String::new(),
                stopped: true
            }
        );
        assert_eq!(t.text(), "ab");
        let mut t = TextStream::new(vec!["END".into()]);
        t.update("abE", false);
        assert_eq!(t.update("abEx", false).delta, "Ex");
    }
}
