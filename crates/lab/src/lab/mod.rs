//! `ecommerce-monolith lab list | show NAME | run NAME|FILE`: the lessons as experiments.
//!
//! An experiment file (`lab/*.toml`, compiled into the binary; `lab/README.md` is its
//! schema) asks a question, says what to predict, brings the service to a steady state
//! and checks it, plays a timeline of phases — load, settings, actions — and judges
//! its hypotheses on what the service measures: its metrics, the SLOs of `slo.yml`, its
//! alerts (with a Prometheus), the gateway's ledger, the orders and the stock. Every
//! setting it touched is put back at the end, on failure and on Ctrl-C; the journal is
//! printed, and written as JSON and HTML on request. The runner announces each phase
//! to the service, which shows it on the charts (`lab_phase`) and in the shop.
//!
//! Models: Chaos Toolkit (steady-state hypothesis, method, rollbacks, journal) and k6
//! (thresholds decide the exit code: 0 every hypothesis held, 1 one did not, 2 the
//! command or the file is wrong).

mod args;
mod experiment;
mod journal;
mod judge;
mod runner;
mod scrape;

use std::path::PathBuf;
use std::process::ExitCode;

pub use self::experiment::{Experiment, SchemaError};
use crate::loadgen::slo::Slo;

/// The experiments shipped with the service: the files of `lab/`, compiled in (its
/// README too, which is not an experiment).
#[derive(rust_embed::Embed)]
#[folder = "../../lab/"]
struct Shipped;

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// The shipped experiments, one per line: the name first, then the title.
    List,
    /// One experiment: its question, what to predict, its timeline and hypotheses.
    Show {
        /// A shipped experiment's name, or an experiment file.
        experiment: String,
    },
    /// Plays an experiment against a running service and judges its hypotheses.
    Run(args::RunArgs),
}

/// The exit code of a `lab` command: 0 every hypothesis held, 1 one did not (or the run
/// could not be completed), 2 a usage or schema error.
pub async fn run(args: LabArgs) -> ExitCode {
    match args.command {
        LabCommand::List => {
            for name in shipped_names() {
                match load(&name) {
                    Ok(experiment) => println!("{name}\t{}", experiment.title),
                    Err(error) => println!("{name}\t(invalid: {error})"),
                }
            }
            ExitCode::SUCCESS
        }
        LabCommand::Show { experiment } => match load(&experiment) {
            Ok(experiment) => {
                print!("{}", journal::describe(&experiment));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        LabCommand::Run(args) => match load(&args.experiment) {
            Ok(experiment) => runner::run(experiment, args).await,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
    }
}

/// The names of the shipped experiments, sorted.
pub fn shipped_names() -> Vec<String> {
    let mut names: Vec<String> = Shipped::iter()
        .filter_map(|file| file.strip_suffix(".toml").map(str::to_string))
        .collect();
    names.sort();
    names
}

/// A shipped experiment by name, or a file by path.
pub fn load(name_or_file: &str) -> Result<Experiment, LoadError> {
    let shipped = (!name_or_file.ends_with(".toml"))
        .then(|| Shipped::get(&format!("{name_or_file}.toml")))
        .flatten();
    let (file, text) = match shipped {
        Some(shipped) => (
            format!("lab/{name_or_file}.toml"),
            String::from_utf8_lossy(&shipped.data).into_owned(),
        ),
        None => {
            let path = PathBuf::from(name_or_file);
            let text = std::fs::read_to_string(&path).map_err(|error| {
                LoadError::NotFound(format!(
                    "{name_or_file}: no such experiment ({error}); `lab list` names the shipped ones"
                ))
            })?;
            (name_or_file.to_string(), text)
        }
    };
    let slos: Vec<&str> = <Slo as strum::VariantArray>::VARIANTS
        .iter()
        .map(|slo| slo.name())
        .collect();
    Experiment::parse(&file, &text, &slos).map_err(LoadError::Schema)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Schema(SchemaError),
}
