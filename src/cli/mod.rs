//! The `offdisk` command line: argument parsing (clap), dispatch, and how errors reach people.
//!
//! Each concern has its own file with its argument structs and a `run` function:
//! `luks` (the expert LUKS family), `disk` (init/open/close/status/list),
//! `backup` (backup/verify/generations/restore), `hotplug` (register/dock/agent).

pub mod backup;
pub mod disk;
pub mod hotplug;
pub mod luks;
pub mod prompt;

use crate::error::{exit, Diagnose};
use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "offdisk",
    version,
    about = "Encrypted off-site backup disks: LUKS, device-mapper and backup rotation",
    long_about = "offdisk turns a removable disk into an encrypted off-site backup disk and keeps it \
current: it formats the disk (GPT, LUKS2, ext4), opens and closes it through device-mapper, rotates \
dated backup generations onto it, and does all of that by itself when a known disk is docked."
)]
pub struct Cli {
    /// Print more about what is being done.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// LUKS header and keyslot operations (cryptsetup-compatible).
    Luks(luks::LuksArgs),
    /// Make a disk (or image) into an encrypted backup disk: GPT, LUKS2, ext4.
    Init(disk::InitArgs),
    /// Unlock a backup disk and optionally mount it.
    Open(disk::OpenArgs),
    /// Unmount and lock a backup disk so it is safe to unplug.
    Close(disk::CloseArgs),
    /// Show backup disks present and known, and how current each is.
    Status(disk::StatusArgs),
    /// List block devices that could be or are backup disks.
    List(disk::ListArgs),
    /// Make a new backup generation.
    Backup(backup::BackupArgs),
    /// Check backup generations against their manifests.
    Verify(backup::VerifyArgs),
    /// List complete backup generations.
    Generations(backup::GenerationsArgs),
    /// Copy files back out of a backup generation.
    Restore(backup::RestoreArgs),
    /// Register an existing LUKS disk as a backup disk.
    Register(hotplug::RegisterArgs),
    /// Handle a docked disk: unlock, back up, verify, close (run by the systemd unit).
    Dock(hotplug::DockArgs),
    /// The desktop agent: notifications and passphrase prompts for docked disks.
    Agent(hotplug::AgentArgs),
    /// Print shell completions.
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// Write the man pages generated from this command line into DIR.
    #[command(hide = true)]
    GenerateMan {
        /// Directory to write the pages into.
        dir: PathBuf,
    },
}

/// An error as the CLI shows it: what went wrong, what to do, and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub hint: Option<String>,
    pub code: i32,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure { message: message.into(), hint: None, code }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl<E: Diagnose> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { message: e.to_string(), hint: e.hint(), code: e.exit_code() }
    }
}

pub type CliResult = Result<i32, Failure>;

/// Parses the command line, runs it, prints any error, and returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => exit::OK,
                _ => exit::USAGE,
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("offdisk: {}", f.message);
            if let Some(h) = f.hint {
                eprintln!("  hint: {h}");
            }
            f.code
        }
    }
}

pub fn run(cli: Cli) -> CliResult {
    let verbose = cli.verbose;
    match cli.command {
        Command::Luks(a) => luks::run(a, verbose),
        Command::Init(a) => disk::run_init(a, verbose),
        Command::Open(a) => disk::run_open(a, verbose),
        Command::Close(a) => disk::run_close(a, verbose),
        Command::Status(a) => disk::run_status(a, verbose),
        Command::List(a) => disk::run_list(a, verbose),
        Command::Backup(a) => backup::run_backup(a, verbose),
        Command::Verify(a) => backup::run_verify(a, verbose),
        Command::Generations(a) => backup::run_generations(a, verbose),
        Command::Restore(a) => backup::run_restore(a, verbose),
        Command::Register(a) => hotplug::run_register(a, verbose),
        Command::Dock(a) => hotplug::run_dock(a, verbose),
        Command::Agent(a) => hotplug::run_agent(a, verbose),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "offdisk", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::GenerateMan { dir } => {
            write_man_pages(&dir).map_err(|e| Failure::new(exit::USAGE, format!("writing man pages: {e}")))?;
            Ok(exit::OK)
        }
    }
}

/// Pages written by hand in `man/` (richer than what clap can say); the generator leaves
/// them alone. `offdisk agent` is a user command, so its page is in section 1.
pub const HAND_WRITTEN_PAGES: &[&str] = &["offdisk-luks", "offdisk-dock", "offdisk-agent"];

/// Renders `offdisk.8` and one page per subcommand (`offdisk-NAME.8`, `offdisk-luks-NAME.8`)
/// with clap_mangen, except the hand-written ones. Returns the file names written.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut page = |cmd: &clap::Command, name: String| -> std::io::Result<()> {
        if !HAND_WRITTEN_PAGES.contains(&name.as_str()) {
            render_page(dir, cmd, &name)?;
            written.push(format!("{name}.8"));
        }
        Ok(())
    };
    page(&cmd, "offdisk".to_string())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub, format!("offdisk-{}", sub.get_name()))?;
        for subsub in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
            page(subsub, format!("offdisk-{}-{}", sub.get_name(), subsub.get_name()))?;
        }
    }
    Ok(written)
}

fn render_page(dir: &std::path::Path, cmd: &clap::Command, name: &str) -> std::io::Result<()> {
    let cmd = cmd.clone().name(name.to_string().leak() as &str);
    let man = clap_mangen::Man::new(cmd).section("8");
    let mut out = Vec::new();
    man.render(&mut out)?;
    std::fs::write(dir.join(format!("{name}.8")), out)
}
