//! The `post-rate` binary: see `post-rate --help`.

fn main() -> std::process::ExitCode {
    post_rate::cli::main()
}
