#![deny(unsafe_code)]

fn main() {
    std::process::exit(offdisk::cli::main());
}
