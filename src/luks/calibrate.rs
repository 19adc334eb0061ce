//! KDF cost calibration like cryptsetup's: pick costs so that deriving a keyslot key takes
//! about `--iter-time` milliseconds on this machine. Argon2: lanes min(4, CPUs), memory up
//! to 1 GiB but at most half of RAM, time cost at least 4 (memory is lowered first when
//! even that is too slow). PBKDF2: at least 1000 iterations.

use super::hash::HashAlg;
use super::kdf::{Argon2Kind, Kdf};
use std::time::Instant;

pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
pub const MIN_MEMORY_KIB: u32 = 32;
pub const MIN_TIME: u32 = 4;
pub const MIN_PBKDF2_ITERATIONS: u32 = 1000;
/// Time budget for the volume-key digest (cryptsetup spends 1/16 of the default 2 s).
pub const DIGEST_ITER_TIME_MS: u32 = 125;

/// Default Argon2 lane count: min(4, CPUs).
pub fn default_lanes() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1).min(4)
}

/// Default Argon2 memory cap: 1 GiB, at most half of RAM.
pub fn default_max_memory_kib() -> u32 {
    let half_ram = super::kdf::physical_memory_bytes().map(|b| b / 2 / 1024).unwrap_or(u64::from(MAX_MEMORY_KIB));
    half_ram.min(u64::from(MAX_MEMORY_KIB)).max(u64::from(MIN_MEMORY_KIB)) as u32
}

fn time_ms(kdf: &Kdf, key_len: usize) -> f64 {
    let t = Instant::now();
    let _ = kdf.derive(b"calibration passphrase", key_len);
    t.elapsed().as_secs_f64() * 1000.0
}

/// PBKDF2 iterations for `target_ms`.
pub fn pbkdf2_iterations(hash: HashAlg, target_ms: u32, key_len: usize) -> u32 {
    let mut iterations = 1000u32;
    loop {
        let kdf = Kdf::Pbkdf2 { hash, iterations, salt: vec![0; 32] };
        let ms = time_ms(&kdf, key_len);
        if ms >= 50.0 || iterations >= 1 << 30 {
            let per_ms = f64::from(iterations) / ms.max(0.001);
            let want = (per_ms * f64::from(target_ms)).min(f64::from(u32::MAX));
            return (want as u32).max(MIN_PBKDF2_ITERATIONS);
        }
        iterations = iterations.saturating_mul(4);
    }
}

/// Argon2 (time, memory KiB) for `target_ms`, with `lanes` lanes and memory ≤ `max_memory_kib`.
pub fn argon2_cost(kind: Argon2Kind, target_ms: u32, max_memory_kib: u32, lanes: u32, key_len: usize) -> (u32, u32) {
    // Probe on a smaller block, then scale: Argon2's cost is close to linear in time × memory.
    let probe_mem = max_memory_kib.min(64 * 1024).max(8 * lanes);
    let kdf = Kdf::Argon2 { kind, time: MIN_TIME, memory_kib: probe_mem, lanes, salt: vec![0; 32] };
    // The faster of two runs: other load on the machine only ever slows a run down.
    let ms = time_ms(&kdf, key_len).min(time_ms(&kdf, key_len)).max(0.01);
    let per_unit = ms / (f64::from(MIN_TIME) * f64::from(probe_mem));
    let budget = f64::from(target_ms) / per_unit; // time × memory we can afford
    let at_max = budget / f64::from(max_memory_kib);
    if at_max >= f64::from(MIN_TIME) {
        (at_max.min(f64::from(u32::MAX)) as u32, max_memory_kib)
    } else {
        let mem = (budget / f64::from(MIN_TIME)) as u32;
        (MIN_TIME, mem.clamp(MIN_MEMORY_KIB.max(8 * lanes), max_memory_kib))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_costs_respect_cryptsetups_bounds() {
        let max = 16 * 1024;
        // A tiny budget: time stays at the minimum and memory shrinks instead.
        let (t, m) = argon2_cost(Argon2Kind::Argon2id, 1, max, 2, 32);
        assert_eq!(t, MIN_TIME);
        assert!((MIN_MEMORY_KIB..max).contains(&m), "{m}");
        // A generous budget: all the memory allowed, then more passes.
        let (t, m) = argon2_cost(Argon2Kind::Argon2i, 5000, max, 2, 32);
        assert_eq!(m, max);
        assert!(t > MIN_TIME, "{t}");
    }

    #[test]
    fn defaults_follow_cryptsetup() {
        let cpus = std::thread::available_parallelism().unwrap().get() as u32;
        assert_eq!(default_lanes(), cpus.min(4));
        let half_ram_kib = super::super::kdf::physical_memory_bytes().unwrap() / 2048;
        assert!(u64::from(default_max_memory_kib()) <= half_ram_kib.min(1 << 20));
        assert!(pbkdf2_iterations(HashAlg::Sha256, 20, 32) >= MIN_PBKDF2_ITERATIONS);
    }
}
