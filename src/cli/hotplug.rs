//! `offdisk register/dock/agent` (owned by the hot-plug work).

use super::CliResult;
use clap::Args;

#[derive(Args, Debug)]
pub struct RegisterArgs {}
#[derive(Args, Debug)]
pub struct DockArgs {}
#[derive(Args, Debug)]
pub struct AgentArgs {}

fn todo() -> CliResult {
    Err(super::Failure::usage("not implemented yet"))
}
pub fn run_register(_a: RegisterArgs, _v: bool) -> CliResult { todo() }
pub fn run_dock(_a: DockArgs, _v: bool) -> CliResult { todo() }
pub fn run_agent(_a: AgentArgs, _v: bool) -> CliResult { todo() }
