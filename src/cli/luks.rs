//! `offdisk luks ...`: the expert LUKS command family (owned by the LUKS work).

use super::CliResult;
use clap::Args;

#[derive(Args, Debug)]
pub struct LuksArgs {}

pub fn run(_args: LuksArgs, _verbose: bool) -> CliResult {
    Err(super::Failure::usage("not implemented yet"))
}
