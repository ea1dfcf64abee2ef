//! The `sentinel` binary: everything lives in the library.
fn main() -> std::process::ExitCode {
    sentinel::cli::main()
}
