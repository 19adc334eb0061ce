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
            let limit = MAX_KEY_FILE as usize + 1;
            let secret = if p == Path::new("-") {
                // Straight from file descriptor 0: the buffered `Stdin` would keep a copy of
                // the key in its buffer for the rest of the run.
                use std::os::fd::AsFd;
                let stdin = std::io::stdin();
                read_secret(&mut FdReader(stdin.as_fd()), 4096, limit)?
            } else {
                let mut f = std::fs::File::open(p)?;
                let m = f.metadata()?;
                // A regular file's size sizes the buffer: read in one piece.
                let hint = if m.is_file() { (m.len() as usize).saturating_add(1) } else { 4096 };
                read_secret(&mut f, hint, limit)?
            };
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

/// Unbuffered reads from a borrowed descriptor.
struct FdReader<'a>(std::os::fd::BorrowedFd<'a>);

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        rustix::io::read(self.0, buf).map_err(std::io::Error::from)
    }
}

/// Reads at most `limit` bytes of `r` into secret memory only: the buffer starts at `hint`
/// bytes and, when full, is replaced by one twice the size (the old one wiped), so no copy
/// of the key is left behind in memory given back, as a growing `Vec` would leave.
fn read_secret(r: &mut dyn Read, hint: usize, limit: usize) -> std::io::Result<SecretBytes> {
    let mut buf = SecretBytes::zeroed(hint.clamp(1, limit));
    let mut n = 0;
    loop {
        if n == buf.len() {
            if n >= limit {
                break;
            }
            let mut bigger = SecretBytes::zeroed(n.saturating_mul(2).min(limit));
            bigger.expose_mut()[..n].copy_from_slice(&buf.expose()[..n]);
            buf = bigger;
        }
        match r.read(&mut buf.expose_mut()[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(SecretBytes::from_slice(&buf.expose()[..n]))
}

/// Asks a yes/no question on the terminal; anything but an upper-case YES declines,
/// as cryptsetup does for destructive operations.
pub fn confirm_yes(question: &str) -> std::io::Result<bool> {
    eprint!("{question}\nAre you sure? (Type 'yes' in capital letters): ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']) == "YES")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_reads_grow_past_the_hint_and_stop_at_the_limit() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let s = read_secret(&mut &data[..], 16, 1 << 20).unwrap();
        assert_eq!(s.expose(), &data[..]);
        let s = read_secret(&mut &data[..], 16, 100).unwrap();
        assert_eq!(s.expose(), &data[..100]);
        let s = read_secret(&mut &data[..0], 16, 100).unwrap();
        assert!(s.is_empty());
    }
}
