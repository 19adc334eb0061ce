//! `offdisk init/open/close/status/list` (owned by the device-mapper work).

use super::CliResult;
use clap::Args;

#[derive(Args, Debug)]
pub struct InitArgs {}
#[derive(Args, Debug)]
pub struct OpenArgs {}
#[derive(Args, Debug)]
pub struct CloseArgs {}
#[derive(Args, Debug)]
pub struct StatusArgs {}
#[derive(Args, Debug)]
pub struct ListArgs {}

fn todo() -> CliResult {
    Err(super::Failure::usage("not implemented yet"))
}
pub fn run_init(_a: InitArgs, _v: bool) -> CliResult { todo() }
pub fn run_open(_a: OpenArgs, _v: bool) -> CliResult { todo() }
pub fn run_close(_a: CloseArgs, _v: bool) -> CliResult { todo() }
pub fn run_status(_a: StatusArgs, _v: bool) -> CliResult { todo() }
pub fn run_list(_a: ListArgs, _v: bool) -> CliResult { todo() }
