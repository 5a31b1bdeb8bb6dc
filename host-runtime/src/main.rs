//! The `sigil` binary.

fn main() -> std::process::ExitCode {
    host_runtime::cli::main()
}
