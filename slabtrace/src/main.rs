//! slabtrace's entry point (the command line lives in the library, see `slabtrace::main`).

fn main() -> std::process::ExitCode {
    slabtrace::main()
}
