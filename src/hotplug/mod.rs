//! Docking: what happens when a registered disk appears (udev → systemd → `offdisk dock`).
