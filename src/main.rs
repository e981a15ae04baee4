fn main() {
    eprintln!("pyward: the command line is not built yet");
    std::process::exit(2);
}
