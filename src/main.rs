fn main() -> std::process::ExitCode {
    vmshot::cli::main()
}
