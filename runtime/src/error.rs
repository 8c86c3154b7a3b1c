//! The one error type of this crate. Every PJRT failure becomes [`Error::Pjrt`] carrying the
//! plugin's own message, so callers never see a crash or a bare status code.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PJRT call returned an error; `message` is the plugin's text.
    #[error("{function} failed ({code}): {message}")]
    Pjrt {
        function: &'static str,
        code: String,
        message: String,
    },

    /// No plugin file could be found (and none could be installed).
    #[error("{0}")]
    PluginNotFound(String),

    /// `dlopen` or the `GetPjrtApi` lookup failed.
    #[error("cannot load PJRT plugin {path}: {reason}")]
    PluginLoad { path: PathBuf, reason: String },

    /// The plugin's function table is too short for an entry we need.
    #[error("PJRT plugin {path} (API {major}.{minor}) does not provide {function}; a plugin built against PJRT C API 0.81 or newer is needed")]
    MissingFunction {
        path: PathBuf,
        major: i32,
        minor: i32,
        function: &'static str,
    },

    /// Installing the plugin with pip failed.
    #[error("installing the PJRT plugin failed: {0}")]
    Install(String),

    /// The caller passed something invalid (checked in Rust before reaching the plugin).
    #[error("{0}")]
    InvalidArgument(String),

    /// A buffer was used after it was deleted or donated to an execution.
    #[error("buffer {0} has been deleted or donated to an earlier execution and cannot be used")]
    BufferDeleted(String),

    /// The plugin returned an element type this crate does not model.
    #[error("unsupported element type {0} (PJRT_Buffer_Type code)")]
    UnsupportedElementType(i32),

    /// Reading or writing the on-disk cache or probing the system.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into())
    }
}
