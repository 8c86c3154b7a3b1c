//! Vocabulary builder (filled in below).
