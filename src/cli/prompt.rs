//! Reading passphrases and confirmations: from a key file, standard input, or the terminal.

use crate::secret::{Passphrase, SecretBytes};
use std::io::Read;
use std::path::Path;

/// Where a passphrase comes from.
pub enum KeySource<'a> {
    /// `--key-file F`; `-` is standard input. The whole content is the key, as cryptsetup
    /// does for key files (no newline stripping).
    File(&'a Path),
    /// The controlling terminal; `confirm` asks twice (for new passphrases).
    Terminal { prompt: &'a str, confirm: bool },
}

/// Largest key file read, as cryptsetup's default --keyfile-size limit (8 MiB).
pub const MAX_KEY_FILE: u64 = 8 * 1024 * 1024;

pub fn read_passphrase(src: KeySource<'_>) -> std::io::Result<Passphrase> {
    match src {
        KeySource::File(p) => {
            let mut buf = Vec::new();
            if p == Path::new("-") {
                std::io::stdin().lock().take(MAX_KEY_FILE + 1).read_to_end(&mut buf)?;
            } else {
                std::fs::File::open(p)?.take(MAX_KEY_FILE + 1).read_to_end(&mut buf)?;
            }
            let secret = SecretBytes::from_vec(buf);
            if secret.len() as u64 > MAX_KEY_FILE {
                return Err(std::io::Error::other("key file is larger than 8 MiB"));
            }
            if secret.is_empty() {
                return Err(std::io::Error::other("key file is empty"));
            }
            Ok(Passphrase::new(secret))
        }
        KeySource::Terminal { prompt, confirm } => {
            let first = SecretBytes::from_vec(rpassword::prompt_password(prompt)?.into_bytes());
            if first.is_empty() {
                return Err(std::io::Error::other("empty passphrase"));
            }
            if confirm {
                let again = SecretBytes::from_vec(rpassword::prompt_password("Verify passphrase: ")?.into_bytes());
                if again != first {
                    return Err(std::io::Error::other("passphrases do not match"));
                }
            }
            Ok(Passphrase::new(first))
        }
    }
}

/// Asks a yes/no question on the terminal; anything but an upper-case YES declines,
/// as cryptsetup does for destructive operations.
pub fn confirm_yes(question: &str) -> std::io::Result<bool> {
    eprint!("{question}\nAre you sure? (Type 'yes' in capital letters): ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']) == "YES")
}
