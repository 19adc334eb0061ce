//! The `offdisk` command line: argument parsing (clap), dispatch, and how errors reach people.
//!
//! Each concern has its own file with its argument structs and a `run` function:
//! `luks` (the expert LUKS family), `disk` (init/open/close/status/list),
//! `backup` (backup/verify/generations/restore), `hotplug` (register/dock/agent),
//! `anywhere` (`--from` and `ls`: reading a backup disk without root or a mount).

pub mod anywhere;
pub mod backup;
pub mod disk;
pub mod hotplug;
pub mod luks;
pub mod progress;
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
    #[command(after_long_help = backup::BACKUP_EXIT_STATUS)]
    Backup(backup::BackupArgs),
    /// Check backup generations against their manifests.
    Verify(backup::VerifyArgs),
    /// List complete backup generations.
    Generations(backup::GenerationsArgs),
    /// Copy files back out of a backup generation.
    #[command(after_long_help = backup::RESTORE_RULES)]
    Restore(backup::RestoreArgs),
    /// List what a generation on a backup disk holds, reading the disk directly (--from).
    Ls(anywhere::LsArgs),
    /// Register an existing LUKS disk as a backup disk.
    Register(hotplug::RegisterArgs),
    /// Forget a registered backup disk (the disk and its backups are untouched).
    Unregister(hotplug::UnregisterArgs),
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

/// "1 problem", "2 problems": a count with its noun in the right number.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

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
            // No raw "(os error N)" reaches people: a sentence, and a hint when there was none.
            let (message, os_hint) = crate::error::plain_os_errors(&f.message);
            eprintln!("offdisk: {message}");
            if let Some(h) = f.hint.or(os_hint) {
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
        Command::Ls(a) => anywhere::run_ls(a, verbose),
        Command::Register(a) => hotplug::run_register(a, verbose),
        Command::Unregister(a) => hotplug::run_unregister(a, verbose),
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
    let mut page = |cmd: &clap::Command, words: &[&str]| -> std::io::Result<()> {
        let name = words.join("-");
        if !HAND_WRITTEN_PAGES.contains(&name.as_str()) {
            render_page(dir, cmd, words)?;
            written.push(format!("{name}.8"));
        }
        Ok(())
    };
    page(&cmd, &["offdisk"])?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub, &["offdisk", sub.get_name()])?;
        for subsub in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
            page(subsub, &["offdisk", sub.get_name(), subsub.get_name()])?;
        }
    }
    Ok(written)
}

/// The section of the page `offdisk-...` for a command: section 8 (system administration)
/// except the desktop agent, a user command (1).
pub fn man_section(page: &str) -> &'static str {
    if page == "offdisk-agent" {
        "1"
    } else {
        "8"
    }
}

/// One page: the title is the page name (`offdisk-backup`), the SYNOPSIS the command as it is
/// typed (`offdisk backup [--target DIR] ... [SRC]...`), and the subcommand list names each
/// page in its own section (clap_mangen alone would write `offdisk-backup` and section 8 for all).
fn render_page(dir: &std::path::Path, cmd: &clap::Command, words: &[&str]) -> std::io::Result<()> {
    let name = words.join("-");
    let typed = words.join(" ");
    let mut cmd = cmd.clone().name(&*name.clone().leak()).bin_name(typed.clone()).display_name(name.clone());
    cmd.build();
    let usage = synopsis(&cmd);
    let cmd = cmd.override_usage(format!("{typed} {usage}"));
    let source = format!("offdisk {}", env!("CARGO_PKG_VERSION"));
    let man = clap_mangen::Man::new(cmd.clone()).title(name.clone()).section("8").source(source);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    // Only pages that exist: clap's built-in `help` subcommand has none.
    let subs: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").collect();
    if !subs.is_empty() {
        out.extend_from_slice(b".SH SUBCOMMANDS\n");
        for sub in subs {
            let page = format!("{name}-{}", sub.get_name());
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            out.extend_from_slice(format!(".TP\n\\fB{}\\fR({})\n{}\n", roff_escape(&page), man_section(&page), roff_escape(&about)).as_bytes());
        }
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        man.render_extra_section(&mut out)?;
    }
    if words.len() == 1 {
        out.extend_from_slice(b".SH \"SEE ALSO\"\n\\fBoffdisk.conf\\fR(5), \\fBoffdisk\\-format\\fR(5), \\fBcryptsetup\\fR(8)\n");
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    // Each render_* call starts with roff's preamble (the Aq string): keep only the first.
    let text = String::from_utf8_lossy(&out).into_owned();
    let preamble = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let text = match text.find(preamble) {
        Some(at) => {
            let end = at + preamble.len();
            format!("{}{}", &text[..end], text[end..].replace(preamble, ""))
        }
        None => text,
    };
    std::fs::write(dir.join(format!("{name}.8")), text)
}

/// The SYNOPSIS line after the command's words: every visible option with its value name,
/// then the positional arguments, then the subcommand.
fn synopsis(cmd: &clap::Command) -> String {
    let mut parts = Vec::new();
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set() && !a.is_positional()) {
        let flag = match (a.get_long(), a.get_short()) {
            (Some(l), _) => format!("--{l}"),
            (None, Some(s)) => format!("-{s}"),
            (None, None) => continue,
        };
        let takes_value = a.get_num_args().map(|n| n.takes_values()).unwrap_or(false)
            && !matches!(a.get_action(), clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count | clap::ArgAction::Help | clap::ArgAction::Version | clap::ArgAction::HelpLong | clap::ArgAction::HelpShort);
        let value = match (takes_value, a.get_value_names()) {
            (false, _) => String::new(),
            (true, Some(v)) => format!(" {}", v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
            (true, None) => format!(" {}", a.get_id().as_str().to_uppercase()),
        };
        let optional_value = a.get_num_args().map(|n| n.min_values() == 0).unwrap_or(false) && takes_value;
        let value = if optional_value { format!(" [{}]", value.trim_start()) } else { value };
        parts.push(if a.is_required_set() { format!("{flag}{value}") } else { format!("[{flag}{value}]") });
    }
    for a in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
        let v = a.get_value_names().map(|v| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")).unwrap_or_else(|| a.get_id().as_str().to_uppercase());
        let many = matches!(a.get_action(), clap::ArgAction::Append) || a.get_num_args().map(|n| n.max_values() > 1).unwrap_or(false);
        let v = if many { format!("{v}...") } else { v };
        parts.push(if a.is_required_set() { v } else { format!("[{v}]") });
    }
    if cmd.has_subcommands() {
        parts.push("COMMAND".into());
    }
    parts.join(" ")
}

fn roff_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('-', "\\-")
}
