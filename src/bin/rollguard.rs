//! `rollguard`: the operator binary.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rollguard",
    version,
    about = "Guards a feature rollout and rolls it back fast and safely"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (crds/ holds this output).
    Crd,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => rollguard::crd::render().map(|yaml| print!("{yaml}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rollguard: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
