//! Secrets get a type the moment they exist: passphrases, volume keys and derived
//! keyslot keys live in heap buffers that are locked in RAM where the system allows it,
//! excluded from core dumps, wiped on drop, and never shown by `Debug`.

use std::fmt;
use zeroize::Zeroize;

#[cfg(target_arch = "x86_64")]
pub mod aes_xts;
pub mod blamka;

/// A heap buffer of secret bytes, wiped when dropped.
pub struct SecretBytes {
    buf: Box<[u8]>,
    locked: bool,
}

/// From the first secret on, the process cannot be dumped: `PR_SET_DUMPABLE` 0 (no core
/// file, no ptrace attach or /proc/<pid>/mem read by the same user) and `RLIMIT_CORE` 0, as
/// cryptsetup does while it holds keys. Process-wide and for the rest of its life: a secret
/// may live until exit, and a later dump could still find freed copies. Best effort (a
/// seccomp filter may refuse prctl); MADV_DONTDUMP on each buffer stays as a second line.
pub fn protect_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use rustix::process::{getrlimit, set_dumpable_behavior, setrlimit, DumpableBehavior, Resource};
        let _ = set_dumpable_behavior(DumpableBehavior::NotDumpable);
        let mut core = getrlimit(Resource::Core);
        core.current = Some(0);
        let _ = setrlimit(Resource::Core, core);
    });
}

impl SecretBytes {
    /// A zero-filled secret buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        protect_process();
        let buf = vec![0u8; len].into_boxed_slice();
        let locked = lock(&buf);
        SecretBytes { buf, locked }
    }

    /// Takes ownership of `v`, wiping the original allocation.
    pub fn from_vec(mut v: Vec<u8>) -> Self {
        let s = Self::from_slice(&v);
        v.zeroize();
        s
    }

    /// Copies `bytes` into a new secret buffer.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut s = Self::zeroed(bytes.len());
        s.buf.copy_from_slice(bytes);
        s
    }

    /// Fresh random bytes from the operating system.
    pub fn random(len: usize) -> std::io::Result<Self> {
        let mut s = Self::zeroed(len);
        getrandom::fill(&mut s.buf).map_err(std::io::Error::other)?;
        Ok(s)
    }

    pub fn expose(&self) -> &[u8] {
        &self.buf
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        Self::from_slice(&self.buf)
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.buf.zeroize();
        if self.locked {
            unlock(&self.buf);
        }
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.buf.len())
    }
}

impl PartialEq for SecretBytes {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.buf.len() == other.buf.len() && bool::from(self.buf.ct_eq(&other.buf))
    }
}
impl Eq for SecretBytes {}

/// Pins a secret buffer in RAM (no swap) and keeps it out of core dumps. Best effort:
/// unprivileged users have a small RLIMIT_MEMLOCK, and failing to lock is not an error.
fn lock(buf: &[u8]) -> bool {
    if buf.is_empty() {
        return false;
    }
    // SAFETY: the pointer and length describe a live allocation owned by the caller;
    // mlock/madvise only change page attributes and never read or write the bytes.
    unsafe {
        let ptr = buf.as_ptr() as *mut libc::c_void;
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
        let start = (ptr as usize) & !(page - 1);
        let end = (ptr as usize + buf.len()).div_ceil(page) * page;
        // MADV_DONTDUMP needs page alignment; it may also cover neighbouring heap data,
        // which is harmless (it only shrinks core dumps).
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTDUMP);
        libc::mlock(ptr, buf.len()) == 0
    }
}

fn unlock(buf: &[u8]) {
    // SAFETY: same allocation as was locked in `lock`, still alive here.
    unsafe {
        libc::munlock(buf.as_ptr() as *const libc::c_void, buf.len());
    }
}

/// Element types a [`SecretRegion`] may be viewed as: plain words for which every bit
/// pattern (all zeros included) is a valid value.
///
/// # Safety
/// An implementor must be `Copy`, have no padding bytes, hold no pointers or references,
/// have no invariant beyond its bits, and have an alignment of at most 4096 bytes.
pub unsafe trait PlainWords: Copy + 'static {}

// SAFETY: integers are plain bits, any pattern is valid, no padding.
unsafe impl PlainWords for u8 {}
// SAFETY: as above.
unsafe impl PlainWords for u64 {}
// SAFETY: `argon2::Block` is a `Copy` 1 KiB block whose public `AsMut<[u64]>` hands safe code
// all 128 of its `u64` words (128 * 8 = its whole size, so no padding and every bit pattern
// is a value safe code can already produce); its alignment is 64. The sizes are asserted
// below at compile time and the word coverage by a unit test. The impl lives here because
// this is the one module allowed `unsafe` outside dm; secret.rs uses nothing else of argon2.
unsafe impl PlainWords for argon2::Block {}
const _: () = assert!(std::mem::size_of::<argon2::Block>() == argon2::Block::SIZE);
const _: () = assert!(std::mem::align_of::<argon2::Block>() <= 4096);

/// Large secret working memory (Argon2's 1 GiB of passphrase-derived blocks): a private
/// anonymous mapping of `len` zeroed `T`s, backed by transparent huge pages where the
/// kernel allows (512 faults per GiB instead of 262,144), kept out of core dumps and
/// forked children, and wiped before it is unmapped.
///
/// Not locked in RAM: a GiB is far beyond the usual RLIMIT_MEMLOCK.
///
/// Huge pages cut Argon2's user time (fewer TLB misses) and its faults on bare metal. Under
/// a hypervisor with free page reporting (virtio-balloon), freed huge pages go back to the
/// host and a cold unlock spends 1-2.5 s more system time re-faulting them (measured on a
/// 2-core Firecracker guest); back-to-back unlocks there are still faster.
pub struct SecretRegion<T: PlainWords> {
    /// Start and length of the whole mapping, for munmap.
    map: std::ptr::NonNull<libc::c_void>,
    map_len: usize,
    /// Start of the usable part: the first huge-page boundary inside the mapping.
    data: std::ptr::NonNull<T>,
    len: usize,
}

/// Transparent huge page size on x86-64 and arm64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

impl<T: PlainWords> SecretRegion<T> {
    /// Maps `len` zeroed elements. Fails (ENOMEM, EINVAL for `len == 0` or overflow)
    /// instead of aborting, so callers can report "out of memory" cleanly.
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        use std::io::{Error, ErrorKind};
        protect_process();
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .filter(|&b| b > 0)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "secret region size"))?;
        // Regions of a huge page or more get one huge page of slack so the data can start
        // on a huge-page boundary (older kernels do not align large anonymous maps).
        let slack = if bytes >= HUGE_PAGE { HUGE_PAGE } else { 0 };
        let map_len = bytes
            .checked_add(slack)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "secret region size"))?;
        // SAFETY: a fresh private anonymous mapping aliases nothing; the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(Error::last_os_error());
        }
        let map = std::ptr::NonNull::new(map).ok_or_else(|| Error::other("mmap returned null"))?;
        let addr = map.as_ptr() as usize;
        let offset = if slack > 0 { addr.next_multiple_of(HUGE_PAGE) - addr } else { 0 };
        // SAFETY: `offset + bytes <= map_len`, so the pointer stays inside the mapping; it is
        // page aligned (mmap) or huge-page aligned, hence aligned for `T` (align <= 4096 by
        // the `PlainWords` contract).
        let data = unsafe { map.byte_add(offset) }.cast::<T>();
        // SAFETY: advice on our own fresh mapping; it changes page attributes, never the
        // bytes, and every piece is best effort (old kernels may refuse some).
        unsafe {
            libc::madvise(map.as_ptr(), map_len, libc::MADV_DONTDUMP);
            libc::madvise(map.as_ptr(), map_len, libc::MADV_WIPEONFORK);
            if slack > 0 {
                libc::madvise(data.as_ptr().cast(), bytes, libc::MADV_HUGEPAGE);
            }
        }
        Ok(SecretRegion { map, map_len, data, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `data` points to `len` initialised (zero-filled by the kernel, then only
        // written as `T`) elements that this value owns; any bit pattern is a valid `T`.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.len) }
    }

    /// Overwrites the whole region with zeros. `Drop` calls this before unmapping.
    pub fn wipe(&mut self) {
        let bytes = self.len * std::mem::size_of::<T>();
        // SAFETY: the `bytes` bytes at `data` belong to this live mapping and all-zero is a
        // valid `T`. A plain memset (much faster than per-byte volatile stores over a GiB)
        // cannot be elided: the pointer is then handed to `black_box` and to munmap, both
        // opaque to the optimiser.
        unsafe { std::ptr::write_bytes(self.data.as_ptr().cast::<u8>(), 0, bytes) };
        std::hint::black_box(self.data);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl<T: PlainWords> AsMut<[T]> for SecretRegion<T> {
    fn as_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T: PlainWords> Drop for SecretRegion<T> {
    fn drop(&mut self) {
        self.wipe();
        // SAFETY: unmaps exactly the mapping created in `zeroed`; no borrow of it can
        // outlive `self`.
        unsafe {
            libc::munmap(self.map.as_ptr(), self.map_len);
        }
    }
}

impl<T: PlainWords> fmt::Debug for SecretRegion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRegion([REDACTED; {} bytes])", self.len * std::mem::size_of::<T>())
    }
}

macro_rules! secret_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(SecretBytes);

        impl $name {
            pub fn new(bytes: SecretBytes) -> Self {
                $name(bytes)
            }
            pub fn from_slice(bytes: &[u8]) -> Self {
                $name(SecretBytes::from_slice(bytes))
            }
            pub fn expose(&self) -> &[u8] {
                self.0.expose()
            }
            pub fn len(&self) -> usize {
                self.0.len()
            }
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "([REDACTED; {}])"), self.0.len())
            }
        }
    };
}

secret_newtype!(
    /// A passphrase or key-file contents, as typed or read.
    Passphrase
);
secret_newtype!(
    /// The volume (master) key that dm-crypt uses for the data segment.
    VolumeKey
);

impl VolumeKey {
    /// A fresh random volume key of `len` bytes.
    pub fn random(len: usize) -> std::io::Result<Self> {
        Ok(VolumeKey(SecretBytes::random(len)?))
    }
    /// Lower-case hex, for `--dump-volume-key` only.
    pub fn to_hex(&self) -> SecretBytes {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = SecretBytes::zeroed(self.len() * 2);
        for (i, b) in self.expose().iter().enumerate() {
            out.expose_mut()[2 * i] = HEX[(b >> 4) as usize];
            out.expose_mut()[2 * i + 1] = HEX[(b & 15) as usize];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_makes_the_process_undumpable_without_core_files() {
        let _s = SecretBytes::from_slice(b"k");
        assert_eq!(rustix::process::dumpable_behavior().unwrap(), rustix::process::DumpableBehavior::NotDumpable);
        assert_eq!(rustix::process::getrlimit(rustix::process::Resource::Core).current, Some(0));
    }

    #[test]
    fn debug_never_shows_bytes() {
        let p = Passphrase::from_slice(b"hunter2");
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("REDACTED"));
        let k = VolumeKey::from_slice(&[0xab; 4]);
        assert!(!format!("{k:?}").contains("ab"));
    }

    #[test]
    fn region_is_zeroed_writable_and_wiped() {
        // Three huge pages' worth plus change: exercises the aligned (huge page) path.
        let mut r = SecretRegion::<u64>::zeroed((3 << 20) / 8 + 5).unwrap();
        assert_eq!(r.len(), (3 << 20) / 8 + 5);
        assert!(r.as_slice().iter().all(|&w| w == 0));
        assert_eq!(r.as_slice().as_ptr() as usize % HUGE_PAGE, 0);
        r.as_mut_slice().fill(0xdead_beef_cafe_f00d);
        r.as_mut_slice()[7] = 1;
        assert!(r.as_slice().contains(&0xdead_beef_cafe_f00d));
        r.wipe();
        assert!(r.as_slice().iter().all(|&w| w == 0));
        // Small regions (no huge-page slack) behave the same.
        let mut s = SecretRegion::<u8>::zeroed(100).unwrap();
        s.as_mut_slice().copy_from_slice(&[0x5a; 100]);
        s.wipe();
        assert_eq!(s.as_slice(), &[0u8; 100][..]);
    }

    #[test]
    fn region_of_nothing_or_overflow_is_an_error() {
        assert!(SecretRegion::<u8>::zeroed(0).is_err());
        assert!(SecretRegion::<u64>::zeroed(usize::MAX / 4).is_err());
    }

    #[test]
    fn region_debug_is_redacted() {
        let mut r = SecretRegion::<u8>::zeroed(16).unwrap();
        r.as_mut_slice().copy_from_slice(b"hunter2hunter2!!");
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("REDACTED") && shown.contains("16 bytes"));
    }

    #[test]
    fn argon2_block_is_nothing_but_its_words() {
        // The `PlainWords` impl relies on the public word view covering the whole block.
        let mut b = argon2::Block::new();
        assert_eq!(AsMut::<[u64]>::as_mut(&mut b).len() * 8, std::mem::size_of::<argon2::Block>());
    }

    #[test]
    fn hex_is_lower_case() {
        let k = VolumeKey::from_slice(&[0x00, 0xff, 0x1a]);
        assert_eq!(k.to_hex().expose(), b"00ff1a");
    }

    #[test]
    fn random_keys_differ() {
        let a = VolumeKey::random(32).unwrap();
        let b = VolumeKey::random(32).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
