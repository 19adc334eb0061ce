fn main() {
    std::process::exit(offdisk::cli::main());
}
