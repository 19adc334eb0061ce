//! Formatting new LUKS2 volumes.
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PbkdfType { #[default] Argon2id, Argon2i, Pbkdf2 }

#[derive(Debug, Clone, Default)]
pub struct PbkdfOptions {}

#[derive(Debug, Clone, Default)]
pub struct FormatOptions {}

pub fn format(dev: &File, opts: &FormatOptions, pass: &Passphrase) -> Result<Volume, LuksError> {
    format_io(dev, opts, pass)
}
pub fn format_io(_io: &dyn BlockIo, _opts: &FormatOptions, _pass: &Passphrase) -> Result<Volume, LuksError> {
    Err(LuksError::Unsupported("todo".into()))
}
