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
    Run(Box<rollguard::controller::RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (crds/ holds this output).
    Crd {
        /// Print the field reference (Markdown) that README.md holds instead.
        #[arg(long)]
        reference: bool,
        /// With --reference: rewrite the reference between the markers of this file.
        #[arg(long, requires = "reference", value_name = "README")]
        splice: Option<std::path::PathBuf>,
    },
}

/// Rewrites the generated CRD reference between the markers of `readme`.
fn splice_reference(readme: &std::path::Path) -> anyhow::Result<()> {
    use rollguard::crd::reference::{BEGIN_MARKER, END_MARKER, markdown, splice};
    let text = std::fs::read_to_string(readme)?;
    let new = splice(&text, &markdown()).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no {BEGIN_MARKER} ... {END_MARKER} section",
            readme.display()
        )
    })?;
    if new != text {
        std::fs::write(readme, new)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => rollguard::controller::run(*args).await,
        Command::Crd {
            reference: false, ..
        } => rollguard::crd::render()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Crd {
            reference: true,
            splice: None,
        } => {
            print!("{}", rollguard::crd::reference::markdown());
            Ok(())
        }
        Command::Crd {
            reference: true,
            splice: Some(readme),
        } => splice_reference(&readme),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rollguard: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
