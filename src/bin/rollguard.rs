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
    /// Run the controller.
    Run(rollguard::controller::RunArgs),
    /// Print the CustomResourceDefinitions as YAML (crds/ holds this output).
    Crd,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => rollguard::controller::run(args).await,
        Command::Crd => rollguard::crd::render()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rollguard: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
