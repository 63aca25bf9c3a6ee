//! The `dumpvault` binary: parse, run, map errors to documented exit codes. Data goes to
//! stdout, everything else to stderr; a closed stdout (EPIPE) ends quietly.

fn main() {
    std::process::exit(dumpvault::cli::main());
}
