#![forbid(unsafe_code)]

pub mod cli;
pub mod nsm;
