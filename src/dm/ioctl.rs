//! The raw kernel interfaces offdisk needs: device-mapper ioctls, block-device and loop-device
//! ioctls, and the key-management syscalls. This file is the only place where the project calls
//! into the kernel with `unsafe`; everything above it works with safe, typed wrappers.
//!
//! Layouts follow the kernel UAPI headers `linux/dm-ioctl.h`, `linux/loop.h`, `linux/fs.h` and
//! `linux/keyctl.h` (stable ABI). Buffers are plain byte vectors that we fill and read with
//! explicit offsets, so no Rust reference ever points at memory the kernel writes.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

// ---------------------------------------------------------------------------------------------
// device-mapper

/// `struct dm_ioctl` is 312 bytes on every Linux architecture (fixed-size fields, 8-aligned).
pub const DM_IOCTL_SIZE: usize = 312;
/// `struct dm_target_spec` (u64 sector_start, u64 length, s32 status, u32 next, char type[16]).
pub const DM_TARGET_SPEC_SIZE: usize = 40;
pub const DM_NAME_LEN: usize = 128;
pub const DM_UUID_LEN: usize = 129;

// Field offsets inside struct dm_ioctl.
const OFF_VERSION: usize = 0;
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_OPEN_COUNT: usize = 24;
const OFF_FLAGS: usize = 28;
const OFF_EVENT_NR: usize = 32;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;
const OFF_UUID: usize = 176;

pub const DM_READONLY_FLAG: u32 = 1 << 0;
pub const DM_SUSPEND_FLAG: u32 = 1 << 1;
pub const DM_STATUS_TABLE_FLAG: u32 = 1 << 4;
pub const DM_ACTIVE_PRESENT_FLAG: u32 = 1 << 5;
pub const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;
/// Out: the ioctl generated a uevent (udev will process it and complete the cookie).
pub const DM_UEVENT_GENERATED_FLAG: u32 = 1 << 13;
pub const DM_UUID_FLAG: u32 = 1 << 14;
/// Ask the kernel to wipe the ioctl buffers it used (they carry key material on table load).
pub const DM_SECURE_DATA_FLAG: u32 = 1 << 15;

/// The device-mapper ioctl commands offdisk uses (`enum { DM_VERSION_CMD = 0, ... }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmCmd {
    Version = 0,
    ListDevices = 2,
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    DevStatus = 7,
    TableLoad = 9,
    TableDeps = 11,
    TableStatus = 12,
}

/// The interface version we speak: 4.x; the kernel answers with its own.
const DM_VERSION_MAJOR: u32 = 4;

/// `_IOWR(0xfd, cmd, struct dm_ioctl)` as the kernel encodes it on x86/arm/riscv.
fn dm_request(cmd: DmCmd) -> libc::c_ulong {
    const IOC_WRITE_READ: libc::c_ulong = 3;
    (IOC_WRITE_READ << 30) | ((DM_IOCTL_SIZE as libc::c_ulong) << 16) | (0xfd << 8) | cmd as libc::c_ulong
}

/// One dm ioctl request/response buffer: the `struct dm_ioctl` header followed by payload.
pub struct DmBuffer {
    bytes: Vec<u8>,
}

impl DmBuffer {
    /// A buffer with `payload_room` bytes after the header for the kernel's answer or our data.
    pub fn new(payload_room: usize) -> DmBuffer {
        let size = DM_IOCTL_SIZE + payload_room.next_multiple_of(8);
        let mut b = DmBuffer { bytes: vec![0; size] };
        b.put_u32(OFF_VERSION, DM_VERSION_MAJOR);
        b.put_u32(OFF_DATA_SIZE, size as u32);
        b.put_u32(OFF_DATA_START, DM_IOCTL_SIZE as u32);
        b
    }

    fn put_u32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.bytes[off..off + 4].try_into().expect("4 bytes"))
    }
    fn get_u64(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.bytes[off..off + 8].try_into().expect("8 bytes"))
    }

    pub fn set_name(&mut self, name: &str) -> io::Result<()> {
        put_cstr(&mut self.bytes[OFF_NAME..OFF_NAME + DM_NAME_LEN], name)
    }
    pub fn set_uuid(&mut self, uuid: &str) -> io::Result<()> {
        put_cstr(&mut self.bytes[OFF_UUID..OFF_UUID + DM_UUID_LEN], uuid)
    }
    pub fn set_flags(&mut self, flags: u32) {
        self.put_u32(OFF_FLAGS, flags);
    }
    /// For resume, remove and rename: the udev cookie (low 16 bits) and the udev rule flags
    /// (high 16 bits), which the kernel hands on in the uevent as `DM_COOKIE`.
    pub fn set_event_nr(&mut self, v: u32) {
        self.put_u32(OFF_EVENT_NR, v);
    }
    pub fn set_target_count(&mut self, n: u32) {
        self.put_u32(OFF_TARGET_COUNT, n);
    }
    pub fn flags(&self) -> u32 {
        self.get_u32(OFF_FLAGS)
    }
    pub fn version(&self) -> [u32; 3] {
        [self.get_u32(0), self.get_u32(4), self.get_u32(8)]
    }
    pub fn target_count(&self) -> u32 {
        self.get_u32(OFF_TARGET_COUNT)
    }
    pub fn open_count(&self) -> i32 {
        self.get_u32(OFF_OPEN_COUNT) as i32
    }
    pub fn event_nr(&self) -> u32 {
        self.get_u32(OFF_EVENT_NR)
    }
    /// The kernel's `dev_t` encoding of the mapped device.
    pub fn dev(&self) -> u64 {
        self.get_u64(OFF_DEV)
    }
    pub fn name(&self) -> String {
        get_cstr(&self.bytes[OFF_NAME..OFF_NAME + DM_NAME_LEN])
    }
    pub fn uuid(&self) -> String {
        get_cstr(&self.bytes[OFF_UUID..OFF_UUID + DM_UUID_LEN])
    }

    /// The payload area the kernel filled (from data_start to data_size), bounds-checked.
    pub fn payload(&self) -> &[u8] {
        let start = (self.get_u32(OFF_DATA_START) as usize).min(self.bytes.len());
        let end = (self.get_u32(OFF_DATA_SIZE) as usize).clamp(start, self.bytes.len());
        &self.bytes[start..end]
    }
    /// Writable payload area for requests that carry data (TABLE_LOAD).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[DM_IOCTL_SIZE..]
    }
    /// Whether the kernel ran out of room for its answer.
    pub fn buffer_full(&self) -> bool {
        self.flags() & DM_BUFFER_FULL_FLAG != 0
    }
    /// Overwrites the whole buffer (it may have carried key material).
    pub fn wipe(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes[..]);
    }
}

impl Drop for DmBuffer {
    fn drop(&mut self) {
        self.wipe();
    }
}

fn put_cstr(field: &mut [u8], s: &str) -> io::Result<()> {
    if s.len() >= field.len() || s.as_bytes().contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("'{s}' is too long or contains NUL")));
    }
    field.fill(0);
    field[..s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}

fn get_cstr(field: &[u8]) -> String {
    match CStr::from_bytes_until_nul(field) {
        Ok(c) => c.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(field).into_owned(),
    }
}

/// Sends one dm ioctl on an open `/dev/mapper/control`.
pub fn dm_ioctl(control: &File, cmd: DmCmd, buf: &mut DmBuffer) -> io::Result<()> {
    let data_size = buf.get_u32(OFF_DATA_SIZE) as usize;
    assert!(data_size <= buf.bytes.len(), "dm buffer data_size exceeds its allocation");
    // SAFETY: the request number encodes `struct dm_ioctl`; `buf.bytes` is a live, exclusively
    // borrowed allocation of at least `data_size` bytes (asserted above) beginning with a
    // properly initialised dm_ioctl header, and the kernel reads/writes at most data_size bytes.
    let rc = unsafe { libc::ioctl(control.as_raw_fd(), dm_request(cmd) as _, buf.bytes.as_mut_ptr()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes one `struct dm_target_spec` plus its NUL-terminated, 8-aligned parameter string at
/// the start of `out`; returns the bytes used (also stored as `next`).
pub fn put_target_spec(out: &mut [u8], start: u64, length: u64, target: &str, params: &[u8]) -> io::Result<usize> {
    let used = (DM_TARGET_SPEC_SIZE + params.len() + 1).next_multiple_of(8);
    if used > out.len() || target.len() >= 16 || params.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "dm target does not fit the ioctl buffer"));
    }
    out[..used].fill(0);
    out[0..8].copy_from_slice(&start.to_ne_bytes());
    out[8..16].copy_from_slice(&length.to_ne_bytes());
    out[20..24].copy_from_slice(&(used as u32).to_ne_bytes());
    out[24..24 + target.len()].copy_from_slice(target.as_bytes());
    out[DM_TARGET_SPEC_SIZE..DM_TARGET_SPEC_SIZE + params.len()].copy_from_slice(params);
    Ok(used)
}

/// One target as TABLE_STATUS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub start: u64,
    pub length: u64,
    pub target_type: String,
    pub params: String,
}

/// Parses `count` dm_target_specs from a TABLE_STATUS payload (offsets relative to the payload).
pub fn parse_target_specs(payload: &[u8], count: u32) -> Vec<TargetSpec> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    for _ in 0..count {
        let Some(spec) = payload.get(pos..pos + DM_TARGET_SPEC_SIZE) else { break };
        let start = u64::from_ne_bytes(spec[0..8].try_into().expect("8"));
        let length = u64::from_ne_bytes(spec[8..16].try_into().expect("8"));
        let next = u32::from_ne_bytes(spec[20..24].try_into().expect("4")) as usize;
        let target_type = get_cstr(&spec[24..40]);
        let params = get_cstr(payload.get(pos + DM_TARGET_SPEC_SIZE..).unwrap_or(&[]));
        out.push(TargetSpec { start, length, target_type, params });
        // For status answers `next` counts from the start of the first spec.
        if next <= pos {
            break;
        }
        pos = next;
    }
    out
}

/// One entry of LIST_DEVICES: (name, dev_t).
pub fn parse_name_list(payload: &[u8]) -> Vec<(String, u64)> {
    // struct dm_name_list { u64 dev; u32 next; char name[]; } chained by `next` (relative).
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(entry) = payload.get(pos..pos + 12) {
        let dev = u64::from_ne_bytes(entry[0..8].try_into().expect("8"));
        let next = u32::from_ne_bytes(entry[8..12].try_into().expect("4")) as usize;
        if dev == 0 && next == 0 && out.is_empty() && payload.get(pos + 12).copied().unwrap_or(0) == 0 {
            break; // empty list
        }
        out.push((get_cstr(payload.get(pos + 12..).unwrap_or(&[])), dev));
        if next == 0 {
            break;
        }
        pos += next;
    }
    out
}

/// Parses TABLE_DEPS: struct dm_target_deps { u32 count; u32 padding; u64 dev[count]; }.
pub fn parse_deps(payload: &[u8]) -> Vec<u64> {
    let Some(head) = payload.get(0..8) else { return Vec::new() };
    let count = u32::from_ne_bytes(head[0..4].try_into().expect("4")) as usize;
    (0..count)
        .filter_map(|i| payload.get(8 + i * 8..16 + i * 8))
        .map(|d| u64::from_ne_bytes(d.try_into().expect("8")))
        .collect()
}

/// Splits the kernel's `dev_t` (huge encoding) into (major, minor).
pub fn dev_major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

// ---------------------------------------------------------------------------------------------
// System V semaphores: device-mapper's udev synchronisation (a udev rule runs
// `dmsetup udevcomplete COOKIE`, which decrements the semaphore the cookie names).

/// Creates a new one-semaphore set under `key` (fails with EEXIST if the key is taken),
/// readable and writable by root only, with the value `initial`.
pub fn sem_create(key: i32, initial: i32) -> io::Result<i32> {
    // SAFETY: semget takes integers only.
    let id = unsafe { libc::semget(key as libc::key_t, 1, 0o600 | libc::IPC_CREAT | libc::IPC_EXCL) };
    if id < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SETVAL takes its value as the variadic int argument (the `val` member of union
    // semun, passed by value); no memory is shared.
    let rc = unsafe { libc::semctl(id, 0, libc::SETVAL, initial as libc::c_int) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        let _ = sem_remove(id);
        return Err(e);
    }
    Ok(id)
}

/// Adds `delta` to the semaphore (never blocks: a decrement below zero fails with EAGAIN).
pub fn sem_add(id: i32, delta: i16) -> io::Result<()> {
    let mut op = libc::sembuf { sem_num: 0, sem_op: delta, sem_flg: libc::IPC_NOWAIT as libc::c_short };
    // SAFETY: semop reads one sembuf from a live local.
    let rc = unsafe { libc::semop(id, &mut op, 1) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The semaphore's value.
pub fn sem_value(id: i32) -> io::Result<i32> {
    // SAFETY: GETVAL takes no further argument and returns the value.
    let rc = unsafe { libc::semctl(id, 0, libc::GETVAL) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Waits until the semaphore is zero, at most `timeout` (EAGAIN when it ran out; EIDRM when
/// someone removed the set).
pub fn sem_wait_zero(id: i32, timeout: std::time::Duration) -> io::Result<()> {
    let mut op = libc::sembuf { sem_num: 0, sem_op: 0, sem_flg: 0 };
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: semtimedop reads one sembuf and one timespec, both live locals.
    let rc = unsafe { libc::syscall(libc::SYS_semtimedop, id as libc::c_long, &mut op as *mut libc::sembuf, 1 as libc::c_long, &ts as *const libc::timespec) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Removes the semaphore set.
pub fn sem_remove(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no further argument.
    let rc = unsafe { libc::semctl(id, 0, libc::IPC_RMID) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

// ---------------------------------------------------------------------------------------------
// block devices

const BLKRRPART: libc::c_ulong = 0x125f;
const BLKFLSBUF: libc::c_ulong = 0x1261;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// Asks the kernel to re-read the partition table of a whole disk.
pub fn reread_partitions(disk: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the fd is a valid open file.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART as _, 0) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Writes back and drops the device's buffer cache.
pub fn flush_buffers(dev: &File) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument; the fd is a valid open file.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), BLKFLSBUF as _, 0) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Size of a block device in bytes.
pub fn block_size_bytes(dev: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a live local.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(size) }
}

// ---------------------------------------------------------------------------------------------
// loop devices

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
pub const LO_FLAGS_READ_ONLY: u32 = 1;
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
pub const LO_FLAGS_PARTSCAN: u32 = 8;

/// `struct loop_info64` (232 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; 64],
    pub lo_crypt_name: [u8; 64],
    pub lo_encrypt_key: [u8; 32],
    pub lo_init: [u64; 2],
}

/// `struct loop_config` (304 bytes).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

impl LoopInfo64 {
    pub fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// Number of a free loop device (`/dev/loopN`), allocating one if needed.
pub fn loop_get_free(control: &File) -> io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the number or -1.
    let rc = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _, 0) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as u32) }
}

/// Binds `backing` to the loop device in one step (LOOP_CONFIGURE, Linux ≥ 5.8).
pub fn loop_configure(loopdev: &File, backing: &File, flags: u32, file_name: &str) -> io::Result<()> {
    let mut info = LoopInfo64::zeroed();
    info.lo_flags = flags;
    let n = file_name.len().min(63);
    info.lo_file_name[..n].copy_from_slice(&file_name.as_bytes()[..n]);
    let cfg = LoopConfig { fd: backing.as_raw_fd() as u32, block_size: 0, info, reserved: [0; 8] };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, whose layout LoopConfig matches
    // (size asserted at compile time); the pointer refers to a live local.
    let rc = unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg as *const LoopConfig) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Status of a bound loop device.
pub fn loop_get_status(loopdev: &File) -> io::Result<LoopInfo64> {
    let mut info = LoopInfo64::zeroed();
    // SAFETY: LOOP_GET_STATUS64 writes one `struct loop_info64` through the pointer, which
    // points at a live local of exactly that layout.
    let rc = unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info as *mut LoopInfo64) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(info) }
}

/// Detaches a loop device from its backing file.
pub fn loop_clear(loopdev: &File) -> io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument.
    let rc = unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

// ---------------------------------------------------------------------------------------------
// kernel key management

/// `KEY_SPEC_THREAD_KEYRING`: the calling thread's private keyring (created on demand).
pub const KEY_SPEC_THREAD_KEYRING: i32 = -1;
const KEYCTL_REVOKE: libc::c_int = 3;
const KEYCTL_UNLINK: libc::c_int = 9;

/// add_key(2): returns the new key's serial.
pub fn add_key(key_type: &CStr, description: &CStr, payload: &[u8], keyring: i32) -> io::Result<i32> {
    // SAFETY: type and description are NUL-terminated C strings; payload pointer and length
    // describe a live slice the kernel only reads (it copies the bytes).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            key_type.as_ptr(),
            description.as_ptr(),
            payload.as_ptr() as *const libc::c_void,
            payload.len(),
            keyring as libc::c_long,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as i32) }
}

/// keyctl(KEYCTL_REVOKE, key) then keyctl(KEYCTL_UNLINK, key, keyring).
pub fn revoke_and_unlink_key(serial: i32, keyring: i32) -> io::Result<()> {
    // SAFETY: keyctl with integer arguments only; no memory is shared with the kernel.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_REVOKE as libc::c_long, serial as libc::c_long) };
    let revoke = if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) };
    // SAFETY: as above, integers only.
    let rc = unsafe {
        libc::syscall(libc::SYS_keyctl, KEYCTL_UNLINK as libc::c_long, serial as libc::c_long, keyring as libc::c_long)
    };
    if rc < 0 {
        // Revoked keys may already be gone from the keyring; the revoke is what matters.
        return revoke;
    }
    revoke
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        // DM_VERSION = _IOWR(0xfd, 0, struct dm_ioctl) = 0xc138fd00 on x86_64.
        assert_eq!(dm_request(DmCmd::Version), 0xc138_fd00);
        assert_eq!(dm_request(DmCmd::TableLoad), 0xc138_fd09);
    }

    #[test]
    fn target_spec_roundtrip() {
        let mut buf = vec![0u8; 256];
        let used = put_target_spec(&mut buf, 0, 1024, "crypt", b"aes-xts-plain64 :64:logon:x 0 7:0 32768").unwrap();
        assert_eq!(used % 8, 0);
        let specs = parse_target_specs(&buf, 1);
        assert_eq!(specs[0].length, 1024);
        assert_eq!(specs[0].target_type, "crypt");
        assert_eq!(specs[0].params, "aes-xts-plain64 :64:logon:x 0 7:0 32768");
    }

    #[test]
    fn name_too_long_is_refused() {
        let mut b = DmBuffer::new(0);
        assert!(b.set_name(&"x".repeat(128)).is_err());
        assert!(b.set_name(&"x".repeat(127)).is_ok());
        assert_eq!(b.name(), "x".repeat(127));
    }

    #[test]
    fn dev_t_split() {
        // makedev(253, 3) and makedev(259, 300000)
        assert_eq!(dev_major_minor((253 << 8) | 3), (253, 3));
        let dev = ((259u64 & 0xfff) << 8) | (300000 & 0xff) | ((300000u64 & !0xff) << 12);
        assert_eq!(dev_major_minor(dev), (259, 300000));
    }
}
