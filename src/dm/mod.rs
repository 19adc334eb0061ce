//! The kernel's device-mapper, driven through its ioctls: dm-crypt mappings for LUKS volumes.
//! All `unsafe` code of the project that talks to the kernel lives in this module.
