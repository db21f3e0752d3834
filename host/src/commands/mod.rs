//! One module per `plinth` subcommand.

pub mod score;
