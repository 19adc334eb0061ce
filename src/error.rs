//! How library errors are shown to people: every error type knows its exit status
//! (cryptsetup's numbering where the same thing is meant) and, where it can, what to do next.

/// Exit statuses shared with cryptsetup.
pub mod exit {
    pub const OK: i32 = 0;
    /// Wrong parameters or a generic failure.
    pub const USAGE: i32 = 1;
    /// No key available with this passphrase.
    pub const NO_KEY: i32 = 2;
    /// Out of memory.
    pub const NO_MEMORY: i32 = 3;
    /// Wrong device specified, or an I/O error on it.
    pub const DEVICE: i32 = 4;
    /// Device already exists or is busy.
    pub const BUSY: i32 = 5;
}

/// Implemented by every library error so the CLI can render it as
/// "what went wrong" plus "what to do".
pub trait Diagnose: std::error::Error {
    /// The process exit status for this error.
    fn exit_code(&self) -> i32 {
        exit::USAGE
    }
    /// A short suggestion of what the user can do about it.
    fn hint(&self) -> Option<String> {
        None
    }
}
