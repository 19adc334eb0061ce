//! `offdisk backup/verify/generations/restore` (owned by the backup work).

use super::CliResult;
use clap::Args;

#[derive(Args, Debug)]
pub struct BackupArgs {}
#[derive(Args, Debug)]
pub struct VerifyArgs {}
#[derive(Args, Debug)]
pub struct GenerationsArgs {}
#[derive(Args, Debug)]
pub struct RestoreArgs {}

fn todo() -> CliResult {
    Err(super::Failure::usage("not implemented yet"))
}
pub fn run_backup(_a: BackupArgs, _v: bool) -> CliResult { todo() }
pub fn run_verify(_a: VerifyArgs, _v: bool) -> CliResult { todo() }
pub fn run_generations(_a: GenerationsArgs, _v: bool) -> CliResult { todo() }
pub fn run_restore(_a: RestoreArgs, _v: bool) -> CliResult { todo() }
