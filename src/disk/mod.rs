//! Block devices: probing signatures, GPT partitioning, loop devices, mkfs, mounts.
