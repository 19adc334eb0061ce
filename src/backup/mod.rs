//! The backup engine: dated generations as plain trees of files on the backup disk.
