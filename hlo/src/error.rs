//! Build-time errors: which op failed, on which operand types, and where in the caller's
//! source it was built.

use std::fmt;
use std::panic::Location;

/// A shape or type error found while building a program.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildError {
    /// The primitive or helper that failed (`dot_general`, `reshape`, ...).
    pub op: String,
    /// The operand types, as `f32[2,3]`.
    pub operands: Vec<String>,
    /// What was expected.
    pub message: String,
    /// Where the failing builder call was made.
    pub location: &'static Location<'static>,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}({}): {}",
            self.location.file(),
            self.location.line(),
            self.op,
            self.operands.join(", "),
            self.message
        )
    }
}

impl std::error::Error for BuildError {}
