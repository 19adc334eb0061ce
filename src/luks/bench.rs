//! `luks benchmark`, modelled on `cryptsetup benchmark`: userspace throughput of each
//! sector cipher and key size on one core (4 KiB sectors, an in-memory 1 MiB buffer, MB =
//! 10^6 bytes, per CPU-second of the measuring thread as `openssl speed` counts), PBKDF2
//! iterations per second for each hash, and the Argon2 costs the calibration would pick
//! for the default 2 s.

use super::calibrate;
use super::cipher::SectorCipher;
use super::hash::HashAlg;
use super::kdf::Argon2Kind;
use super::LuksError;
use std::time::{Duration, Instant};

/// Buffer processed repeatedly (fits the caches, like cryptsetup's: memory only, no I/O).
pub const BUFFER: usize = 1 << 20;
pub const SECTOR: usize = 4096;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CipherResult {
    pub cipher: String,
    pub key_bits: u32,
    pub encrypt_mb_s: f64,
    pub decrypt_mb_s: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum KdfResult {
    Pbkdf2 { kdf: String, key_bits: u32, iterations_per_second: u64 },
    Argon2 { kdf: String, key_bits: u32, time: u32, memory_kib: u32, threads: u32, target_ms: u32 },
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map(Duration::from).unwrap_or_default()
}

/// MB per CPU-second of `f` run over `buf` again and again for at least `min` of CPU time.
/// CPU time, not wall time, as `openssl speed` counts by default: on a loaded machine the
/// wall clock measures the other processes too.
fn rate(buf: &mut [u8], min: Duration, mut f: impl FnMut(&mut [u8])) -> f64 {
    f(buf); // warm up: page faults, caches, CPU frequency
    let wall = Instant::now();
    let start = thread_cpu();
    let mut bytes = 0u64;
    // Wall-clock cap: a thread starved of CPU still ends.
    while thread_cpu() - start < min && wall.elapsed() < min * 20 {
        f(buf);
        bytes += buf.len() as u64;
    }
    let cpu = (thread_cpu() - start).as_secs_f64();
    if cpu > 0.0 {
        bytes as f64 / cpu / 1e6
    } else {
        0.0
    }
}

/// Throughput of `spec` with a `key_bits` key on this thread, each direction measured for
/// at least `min`.
pub fn cipher(spec: &str, key_bits: u32, min: Duration) -> Result<CipherResult, LuksError> {
    if key_bits == 0 || key_bits % 8 != 0 {
        return Err(LuksError::InvalidOption(format!("key size {key_bits} bits")));
    }
    let mut key = crate::secret::SecretBytes::random((key_bits / 8) as usize).map_err(|e| LuksError::io("random bytes".into(), e))?;
    let c = SectorCipher::new(spec, key.expose())?;
    key.expose_mut().fill(0);
    let mut buf = vec![0x5au8; BUFFER];
    let encrypt_mb_s = rate(&mut buf, min, |b| c.encrypt(b, SECTOR, 0).expect("whole sectors"));
    let decrypt_mb_s = rate(&mut buf, min, |b| c.decrypt(b, SECTOR, 0).expect("whole sectors"));
    Ok(CipherResult { cipher: spec.to_owned(), key_bits, encrypt_mb_s, decrypt_mb_s })
}

/// The hashes `cryptsetup benchmark` reports PBKDF2 for.
pub const PBKDF2_HASHES: [HashAlg; 5] = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512, HashAlg::Ripemd160, HashAlg::Whirlpool];

/// PBKDF2 iterations per second with `hash` for a 256-bit key.
pub fn pbkdf2(hash: HashAlg) -> KdfResult {
    KdfResult::Pbkdf2 {
        kdf: format!("pbkdf2-{}", hash.name()),
        key_bits: 256,
        iterations_per_second: u64::from(calibrate::pbkdf2_iterations(hash, 1000, 32)),
    }
}

/// The Argon2 costs calibration picks for `target_ms` (defaults: memory up to 1 GiB and half
/// of RAM, min(4, CPUs) lanes), as cryptsetup reports them.
pub fn argon2(kind: Argon2Kind, target_ms: u32) -> KdfResult {
    let lanes = calibrate::default_lanes();
    let (time, memory_kib) = calibrate::argon2_cost(kind, target_ms, calibrate::default_max_memory_kib(), lanes, 32);
    KdfResult::Argon2 { kdf: kind.name().to_owned(), key_bits: 256, time, memory_kib, threads: lanes, target_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_both_directions() {
        let r = cipher("aes-xts-plain64", 512, Duration::from_millis(20)).unwrap();
        assert!(r.encrypt_mb_s > 0.0 && r.decrypt_mb_s > 0.0);
        assert_eq!((r.cipher.as_str(), r.key_bits), ("aes-xts-plain64", 512));
        let j = serde_json::to_value(&r).unwrap();
        assert!(j["encrypt_mb_s"].is_f64() && j["key_bits"] == 512);
        assert!(cipher("aes-xts-plain64", 100, Duration::ZERO).is_err());
        assert!(cipher("aes-xts-plain64", 384, Duration::ZERO).is_ok(), "AES-192 XTS");
        assert!(cipher("aes-xts-plain64", 128, Duration::ZERO).is_err(), "64-bit halves");
    }
}
