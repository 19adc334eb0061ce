//! Password-based key derivation for keyslots: PBKDF2 and Argon2i/Argon2id (version 0x13,
//! no secret, no associated data), as LUKS2's `kdf` objects and LUKS1 keyslots describe them.

use super::argon2_engine;
use super::hash::HashAlg;
use super::LuksError;
use crate::secret::{SecretBytes, SecretRegion};

/// Argon2 flavour named by a LUKS2 `kdf.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argon2Kind {
    Argon2i,
    Argon2id,
}

impl Argon2Kind {
    pub fn name(self) -> &'static str {
        match self {
            Argon2Kind::Argon2i => "argon2i",
            Argon2Kind::Argon2id => "argon2id",
        }
    }
}

/// Largest Argon2 memory cost accepted from a header (cryptsetup's limit, 4 GiB in KiB).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// Largest Argon2 lane count accepted (Argon2's own limit).
pub const MAX_ARGON2_LANES: u32 = 0xFF_FFFF;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kdf {
    Pbkdf2 { hash: HashAlg, iterations: u32, salt: Vec<u8> },
    Argon2 { kind: Argon2Kind, time: u32, memory_kib: u32, lanes: u32, salt: Vec<u8> },
}

/// Total RAM, for refusing Argon2 costs that cannot fit instead of being OOM-killed.
pub fn physical_memory_bytes() -> Option<u64> {
    use nix::unistd::{sysconf, SysconfVar};
    let pages = sysconf(SysconfVar::_PHYS_PAGES).ok()??;
    let size = sysconf(SysconfVar::PAGE_SIZE).ok()??;
    u64::try_from(pages).ok()?.checked_mul(u64::try_from(size).ok()?)
}

impl Kdf {
    /// Derives `out_len` bytes from `password`.
    pub fn derive(&self, password: &[u8], out_len: usize) -> Result<SecretBytes, LuksError> {
        let mut out = SecretBytes::zeroed(out_len);
        match self {
            Kdf::Pbkdf2 { hash, iterations, salt } => hash.pbkdf2(password, salt, *iterations, out.expose_mut()),
            Kdf::Argon2 { kind, time, memory_kib, lanes, salt } => {
                let need = u64::from(*memory_kib) * 1024;
                if let Some(ram) = physical_memory_bytes() {
                    if need > ram {
                        return Err(LuksError::OutOfMemory(format!(
                            "argon2 needs {} MiB, more than this machine's {} MiB of RAM",
                            need >> 20,
                            ram >> 20
                        )));
                    }
                }
                let params = argon2::Params::new(*memory_kib, *time, *lanes, Some(out_len))
                    .map_err(|e| LuksError::Unsupported(format!("argon2 parameters: {e}")))?;
                // Our own block memory rather than argon2's allocation: huge pages (far fewer
                // faults for a GiB) and a wipe of the passphrase-derived blocks afterwards.
                let mut blocks = SecretRegion::<argon2::Block>::zeroed(params.block_count()).map_err(|e| {
                    LuksError::OutOfMemory(format!("argon2 needs {} MiB of memory: {e}", need >> 20))
                })?;
                // `Params::new` checked the costs; these are the argon2 crate's remaining input
                // checks, before our engine (lanes in parallel, SIMD compression) runs.
                if password.len() > argon2::MAX_PWD_LEN {
                    return Err(LuksError::InvalidOption("passphrase too long for argon2".into()));
                }
                if salt.len() < argon2::MIN_SALT_LEN || salt.len() > argon2::MAX_SALT_LEN {
                    let e = if salt.len() < argon2::MIN_SALT_LEN { argon2::Error::SaltTooShort } else { argon2::Error::SaltTooLong };
                    return Err(LuksError::Unsupported(format!("argon2: {e}")));
                }
                let cost = argon2_engine::Cost { time: *time, memory_kib: *memory_kib, lanes: *lanes };
                debug_assert_eq!(cost.block_count(), params.block_count());
                argon2_engine::hash(*kind, cost, password, salt, &[], &[], blocks.as_mut_slice(), out.expose_mut());
            }
        }
        Ok(out)
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Kdf::Pbkdf2 { .. } => "pbkdf2",
            Kdf::Argon2 { kind, .. } => kind.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_matches_rfc9106_shape() {
        // Same inputs give the same key; different salt gives a different one.
        let k = |salt: &[u8]| {
            Kdf::Argon2 { kind: Argon2Kind::Argon2id, time: 1, memory_kib: 64, lanes: 2, salt: salt.to_vec() }
                .derive(b"pw", 32)
                .unwrap()
        };
        assert_eq!(k(b"saltsaltsalt"), k(b"saltsaltsalt"));
        assert_ne!(k(b"saltsaltsalt"), k(b"saltsaltsalu"));
    }

    #[test]
    fn region_backed_argon2_matches_the_crates_own_allocation() {
        // Small costs, both flavours, several lane counts (including one whose memory is
        // rounded down to a multiple of 4 * lanes, and one above a huge page).
        for (kind, algo) in
            [(Argon2Kind::Argon2i, argon2::Algorithm::Argon2i), (Argon2Kind::Argon2id, argon2::Algorithm::Argon2id)]
        {
            for (lanes, memory_kib, time) in [(1, 64, 3), (2, 100, 2), (3, 256, 1), (4, 4096, 1)] {
                let salt = [0x5au8; 32];
                let kdf = Kdf::Argon2 { kind, time, memory_kib, lanes, salt: salt.to_vec() };
                let ours = kdf.derive(b"correct horse", 64).unwrap();
                let params = argon2::Params::new(memory_kib, time, lanes, Some(64)).unwrap();
                let mut theirs = [0u8; 64];
                argon2::Argon2::new(algo, argon2::Version::V0x13, params)
                    .hash_password_into(b"correct horse", &salt, &mut theirs)
                    .unwrap();
                assert_eq!(ours.expose(), &theirs[..], "{kind:?} lanes={lanes} m={memory_kib} t={time}");
            }
        }
    }

    #[test]
    fn absurd_memory_is_out_of_memory_not_a_crash() {
        let kdf = Kdf::Argon2 { kind: Argon2Kind::Argon2i, time: 1, memory_kib: u32::MAX, lanes: 1, salt: vec![0; 32] };
        if physical_memory_bytes().is_some_and(|r| r < u64::from(u32::MAX) * 1024) {
            assert!(matches!(kdf.derive(b"pw", 32), Err(LuksError::OutOfMemory(_))));
        }
    }
}
