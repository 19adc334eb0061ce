//! `/etc/offdisk/config.toml`: registered disks, their sources, excludes and retention.
