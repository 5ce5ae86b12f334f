//! echo-lab describing itself: the completion scripts and the man pages,
//! both made from the same definitions as `--help`.

use anyhow::Context as _;
use clap::{Args, CommandFactory};

use super::Cli;

/// `echo-lab man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The subcommand whose page to print; none for the top-level page.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(SUBCOMMANDS))]
    pub subcommand: Option<String>,
}

/// The subcommands that have a man page of their own.
pub const SUBCOMMANDS: [&str; 9] = [
    "serve",
    "client",
    "probe",
    "bench",
    "compare",
    "report",
    "notes",
    "completions",
    "man",
];

/// `echo-lab completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The completion script for `shell`.
///
/// clap_complete's bash script names the case labels of a hyphenated
/// binary's subcommands one way (`echo__subcmd__lab__subcmd__serve`) and
/// the state it matches them against another (`echo__lab__subcmd__serve`),
/// so nothing after the subcommand completed (clap-rs/clap#6421): the
/// labels are renamed to match.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "echo-lab", &mut script);
    if shell != clap_complete::Shell::Bash {
        return script;
    }
    String::from_utf8_lossy(&script)
        .replace("echo__subcmd__lab", "echo__lab")
        .into_bytes()
}

/// The man page of echo-lab, or of one of its [`SUBCOMMANDS`]
/// (`echo-lab-serve(1)`, which the top-level page refers to).
///
/// # Errors
/// No such subcommand, or the page cannot be rendered.
pub fn man_page(subcommand: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut command = Cli::command();
    command.build();
    let command = match subcommand {
        None => command,
        Some(name) => command
            .find_subcommand(name)
            .with_context(|| format!("no subcommand {name}"))?
            .clone()
            .name(format!("echo-lab-{name}")),
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    Ok(page)
}
