//! Sector ciphers as dm-crypt names them — `<cipher>-<mode>-<iv>` such as
//! `aes-xts-plain64`, `serpent-cbc-essiv:sha256`, `twofish-cbc-plain`, `aes-lrw-benbi`,
//! `aes-ecb` — in userspace: for keyslot areas (LUKS1 and LUKS2) and for reading data
//! sectors without dm-crypt.
//!
//! # Using it
//! ```
//! use offdisk::luks::cipher::SectorCipher;
//! let key = [7u8; 64]; // the volume key (dm-crypt's key)
//! let c = SectorCipher::new("aes-xts-plain64", &key).unwrap();
//! let mut data = vec![0u8; 8 * 4096]; // whole sectors read from the data segment
//! // `first_iv` counts 512-byte units: segment.iv_tweak + (byte offset in segment) / 512.
//! c.encrypt(&mut data, 4096, 0).unwrap();
//! c.decrypt_parallel(&mut data, 4096, 0).unwrap(); // large buffers: every core
//! assert!(data.iter().all(|&b| b == 0));
//! ```
//! IVs count 512-byte units whatever the sector size (LUKS2 never sets
//! `iv_large_sectors`): sector k of a 4096-byte-sector run starting at IV v gets IV v + 8k.
//!
//! Supported: ciphers aes, serpent, twofish; modes xts, cbc, lrw, ecb; IV generators
//! plain, plain64, plain64be, essiv:HASH (sha1, sha224, sha256, sha384, sha512, ripemd160,
//! whirlpool and the kernel's truncated wp256/wp384/wp512), benbi and null.
//!
//! # Speed
//! XTS computes the tweaks of up to 64 sectors in one parallel-block pass and then runs
//! the data through the block cipher's backend (AES-NI, VAES with AVX2 or AVX-512) in its
//! widest chunks; `*_parallel` splits large buffers over all cores with rayon.
//! `offdisk luks benchmark` measures it.

mod block;
mod cbc;
mod xts;

pub use block::Algorithm;
pub use xts::XtsKernel;

use super::hash::HashAlg;
use super::LuksError;
use block::{Block, BlockCipher};
use rayon::prelude::*;

/// Chain modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainMode {
    Xts,
    Cbc,
    Lrw,
    Ecb,
}

/// The hash behind an `essiv:` IV generator, possibly truncated (`wp256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EssivHash {
    pub alg: HashAlg,
    pub len: usize,
}

/// IV generators (dm-crypt's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvMode {
    /// 32-bit little-endian sector number.
    Plain,
    /// 64-bit little-endian sector number.
    Plain64,
    /// 64-bit big-endian sector number in the last 8 bytes.
    Plain64Be,
    /// The plain64 IV encrypted with the block cipher keyed by HASH(key).
    Essiv(EssivHash),
    /// Big-endian count of 16-byte blocks, from 1 (for LRW).
    Benbi,
    /// All-zero IV.
    Null,
}

/// A parsed cipher spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSpec {
    pub algorithm: Algorithm,
    pub mode: ChainMode,
    /// `None` only for ECB.
    pub iv: Option<IvMode>,
}

impl CipherSpec {
    /// Parses `cipher-mode[-iv[:opts]]` as dm-crypt does (lower case, no `capi:` form).
    pub fn parse(spec: &str) -> Result<CipherSpec, LuksError> {
        let unsupported = || LuksError::Unsupported(format!("cipher {spec:?}"));
        let mut parts = spec.splitn(3, '-');
        let algorithm = Algorithm::parse(parts.next().unwrap_or("")).ok_or_else(unsupported)?;
        let mode = match parts.next() {
            Some("xts") => ChainMode::Xts,
            Some("cbc") => ChainMode::Cbc,
            Some("lrw") => ChainMode::Lrw,
            Some("ecb") => ChainMode::Ecb,
            _ => return Err(unsupported()),
        };
        let iv = match (mode, parts.next()) {
            (ChainMode::Ecb, None) => None,
            (ChainMode::Ecb, Some(_)) | (_, None) => return Err(unsupported()),
            (_, Some(iv)) => Some(match iv.split_once(':') {
                None => match iv {
                    "plain" => IvMode::Plain,
                    "plain64" => IvMode::Plain64,
                    "plain64be" => IvMode::Plain64Be,
                    "benbi" => IvMode::Benbi,
                    "null" => IvMode::Null,
                    _ => return Err(unsupported()),
                },
                Some(("essiv", hash)) => IvMode::Essiv(essiv_hash(hash).ok_or_else(unsupported)?),
                Some(_) => return Err(unsupported()),
            }),
        };
        Ok(CipherSpec { algorithm, mode, iv })
    }

    /// Checks that a `key_len`-byte key fits this spec.
    pub fn check_key_len(&self, key_len: usize) -> Result<(), LuksError> {
        let ok = match self.mode {
            ChainMode::Xts => key_len % 2 == 0 && self.algorithm.key_len_ok(key_len / 2),
            ChainMode::Lrw => key_len > 16 && self.algorithm.key_len_ok(key_len - 16),
            ChainMode::Cbc | ChainMode::Ecb => self.algorithm.key_len_ok(key_len),
        };
        if !ok {
            return Err(LuksError::Unsupported(format!("cipher {} with a {}-bit key", self.name(), key_len * 8)));
        }
        if let Some(IvMode::Essiv(h)) = self.iv {
            if !self.algorithm.key_len_ok(h.len) {
                return Err(LuksError::Unsupported(format!(
                    "ESSIV with {}: its {}-byte digest is not a {} key",
                    h.alg.name(),
                    h.len,
                    self.algorithm.name()
                )));
            }
        }
        Ok(())
    }

    /// The dm-crypt spelling.
    pub fn name(&self) -> String {
        let mode = match self.mode {
            ChainMode::Xts => "xts",
            ChainMode::Cbc => "cbc",
            ChainMode::Lrw => "lrw",
            ChainMode::Ecb => "ecb",
        };
        let iv = match self.iv {
            None => String::new(),
            Some(IvMode::Plain) => "-plain".into(),
            Some(IvMode::Plain64) => "-plain64".into(),
            Some(IvMode::Plain64Be) => "-plain64be".into(),
            Some(IvMode::Benbi) => "-benbi".into(),
            Some(IvMode::Null) => "-null".into(),
            Some(IvMode::Essiv(h)) => format!("-essiv:{}", essiv_hash_name(h)),
        };
        format!("{}-{mode}{iv}", self.algorithm.name())
    }
}

fn essiv_hash(name: &str) -> Option<EssivHash> {
    let trunc = |len| Some(EssivHash { alg: HashAlg::Whirlpool, len });
    match name {
        "wp256" => trunc(32),
        "wp384" => trunc(48),
        "wp512" => trunc(64),
        _ => HashAlg::parse(name).ok().map(|alg| EssivHash { alg, len: alg.output_len() }),
    }
}

fn essiv_hash_name(h: EssivHash) -> String {
    match (h.alg, h.len) {
        (HashAlg::Whirlpool, 32) => "wp256".into(),
        (HashAlg::Whirlpool, 48) => "wp384".into(),
        (alg, _) => alg.name().into(),
    }
}

/// Checks that offdisk can run `spec` with a `key_len`-byte key.
pub fn check_spec(spec: &str, key_len: usize) -> Result<(), LuksError> {
    CipherSpec::parse(spec)?.check_key_len(key_len)
}

#[allow(clippy::large_enum_variant)] // one per keyed cipher; boxing would cost a pointer chase per call
enum Mode {
    Xts(xts::Xts),
    Cbc(BlockCipher),
    Lrw(cbc::Lrw),
    Ecb(BlockCipher),
}

#[allow(clippy::large_enum_variant)] // one per keyed cipher
enum IvGen {
    Simple(IvMode),
    Essiv(BlockCipher),
}

impl IvGen {
    #[inline]
    fn fill(&self, iv_sector: u64, out: &mut Block) {
        out.0 = [0; 16];
        match self {
            IvGen::Simple(IvMode::Plain) => out[..4].copy_from_slice(&(iv_sector as u32).to_le_bytes()),
            IvGen::Simple(IvMode::Plain64) => out[..8].copy_from_slice(&iv_sector.to_le_bytes()),
            IvGen::Simple(IvMode::Plain64Be) => out[8..].copy_from_slice(&iv_sector.to_be_bytes()),
            // 512-byte sectors are 32 blocks: shift 5 (dm-crypt's benbi for 16-byte blocks).
            IvGen::Simple(IvMode::Benbi) => out[8..].copy_from_slice(&((iv_sector << 5).wrapping_add(1)).to_be_bytes()),
            IvGen::Simple(IvMode::Null) | IvGen::Simple(IvMode::Essiv(_)) => {}
            IvGen::Essiv(c) => {
                out[..8].copy_from_slice(&iv_sector.to_le_bytes());
                c.encrypt_block(out);
            }
        }
    }
}

/// A keyed sector cipher. `Sync`: one instance may serve many threads.
pub struct SectorCipher {
    spec: CipherSpec,
    mode: Mode,
    iv: IvGen,
}

impl std::fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SectorCipher({})", self.spec.name())
    }
}

/// Smallest piece of a parallel run given to one thread.
const MIN_PIECE: usize = 64 << 10;

impl SectorCipher {
    /// Keys the cipher named `spec` with `key` (dm-crypt's key: both XTS halves, the LRW
    /// tweak key after the cipher key).
    pub fn new(spec: &str, key: &[u8]) -> Result<SectorCipher, LuksError> {
        SectorCipher::with_xts_kernel(spec, key, XtsKernel::for_aes())
    }

    /// As `new`, running AES-XTS on `kernel` where it applies and this CPU runs it (else on
    /// the crate): for comparing the kernels on one machine.
    pub fn with_xts_kernel(spec: &str, key: &[u8], kernel: XtsKernel) -> Result<SectorCipher, LuksError> {
        let spec = CipherSpec::parse(spec)?;
        spec.check_key_len(key.len())?;
        let alg = spec.algorithm;
        let mode = match spec.mode {
            ChainMode::Xts => Mode::Xts(xts::Xts::new(alg, key, kernel)?),
            ChainMode::Lrw => {
                let (k1, k2) = key.split_at(key.len() - 16);
                let k2: [u8; 16] = k2.try_into().expect("16 bytes");
                Mode::Lrw(cbc::Lrw { cipher: BlockCipher::new(alg, k1)?, k2: u128::from_be_bytes(k2) })
            }
            ChainMode::Cbc => Mode::Cbc(BlockCipher::new(alg, key)?),
            ChainMode::Ecb => Mode::Ecb(BlockCipher::new(alg, key)?),
        };
        let iv = match spec.iv {
            Some(IvMode::Essiv(h)) => {
                let mut salt = crate::secret::SecretBytes::zeroed(h.len);
                h.alg.hash_into(&[key], salt.expose_mut());
                IvGen::Essiv(BlockCipher::new(alg, salt.expose())?)
            }
            Some(m) => IvGen::Simple(m),
            None => IvGen::Simple(IvMode::Null),
        };
        Ok(SectorCipher { spec, mode, iv })
    }

    pub fn spec(&self) -> CipherSpec {
        self.spec
    }

    /// The code that runs XTS for this cipher (`None` for other modes).
    pub fn xts_kernel(&self) -> Option<XtsKernel> {
        match &self.mode {
            Mode::Xts(x) => Some(x.kernel()),
            _ => None,
        }
    }

    /// Checks `data` is whole sectors of a supported size.
    fn check(data: &[u8], sector_size: usize) -> Result<(), LuksError> {
        if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(LuksError::Unsupported(format!("sector size {sector_size}")));
        }
        if data.len() % sector_size != 0 {
            return Err(LuksError::Unsupported(format!(
                "{} bytes is not a whole number of {sector_size}-byte sectors",
                data.len()
            )));
        }
        Ok(())
    }

    /// Decrypts whole sectors in place on this thread; the first sector's IV is `first_iv`
    /// (in 512-byte units).
    pub fn decrypt(&self, data: &mut [u8], sector_size: usize, first_iv: u64) -> Result<(), LuksError> {
        Self::check(data, sector_size)?;
        self.run(data, sector_size, first_iv, false);
        Ok(())
    }

    /// Encrypts whole sectors in place on this thread; see `decrypt`.
    pub fn encrypt(&self, data: &mut [u8], sector_size: usize, first_iv: u64) -> Result<(), LuksError> {
        Self::check(data, sector_size)?;
        self.run(data, sector_size, first_iv, true);
        Ok(())
    }

    /// `decrypt` spread over all cores (rayon's pool) in sector-aligned pieces: for large
    /// buffers such as whole extents of a disk image.
    pub fn decrypt_parallel(&self, data: &mut [u8], sector_size: usize, first_iv: u64) -> Result<(), LuksError> {
        self.parallel(data, sector_size, first_iv, false)
    }

    /// `encrypt` spread over all cores; see `decrypt_parallel`.
    pub fn encrypt_parallel(&self, data: &mut [u8], sector_size: usize, first_iv: u64) -> Result<(), LuksError> {
        self.parallel(data, sector_size, first_iv, true)
    }

    fn parallel(&self, data: &mut [u8], sector_size: usize, first_iv: u64, encrypt: bool) -> Result<(), LuksError> {
        Self::check(data, sector_size)?;
        let threads = rayon::current_num_threads().max(1);
        let sectors = data.len() / sector_size;
        let per_piece = sectors.div_ceil(threads * 4).max(MIN_PIECE / sector_size).max(1);
        let step = (sector_size / 512) as u64;
        data.par_chunks_mut(per_piece * sector_size).enumerate().for_each(|(i, piece)| {
            self.run(piece, sector_size, first_iv.wrapping_add((i * per_piece) as u64 * step), encrypt);
        });
        Ok(())
    }

    fn run(&self, data: &mut [u8], sector_size: usize, first_iv: u64, encrypt: bool) {
        let step = (sector_size / 512) as u64;
        let iv = |i: u64, out: &mut Block| self.iv.fill(first_iv.wrapping_add(i.wrapping_mul(step)), out);
        match &self.mode {
            Mode::Xts(x) => x.process(data, sector_size, encrypt, iv),
            Mode::Cbc(c) if encrypt => cbc::cbc_encrypt(c, data, sector_size, iv),
            Mode::Cbc(c) => cbc::cbc_decrypt(c, data, sector_size, iv),
            Mode::Lrw(l) => l.process(data, sector_size, encrypt, iv),
            Mode::Ecb(c) => cbc::ecb(c, data, encrypt),
        }
    }
}

/// The cipher and key-size pairs `cryptsetup benchmark` reports, as (spec, key bits).
pub const BENCHMARK_SET: [(&str, u32); 12] = [
    ("aes-cbc-essiv:sha256", 128),
    ("serpent-cbc-essiv:sha256", 128),
    ("twofish-cbc-essiv:sha256", 128),
    ("aes-cbc-essiv:sha256", 256),
    ("serpent-cbc-essiv:sha256", 256),
    ("twofish-cbc-essiv:sha256", 256),
    ("aes-xts-plain64", 256),
    ("serpent-xts-plain64", 256),
    ("twofish-xts-plain64", 256),
    ("aes-xts-plain64", 512),
    ("serpent-xts-plain64", 512),
    ("twofish-xts-plain64", 512),
];

#[cfg(test)]
mod tests;
