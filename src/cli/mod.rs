//! The command line's subcommands, one module each, and the flags they share.

pub mod adapters;
pub mod args;
pub mod bench;
pub mod eval;
pub mod predict;
pub mod selftest;
pub mod serve;
pub mod train;
