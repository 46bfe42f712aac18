//! One module per subcommand.

pub mod autobahn;
pub mod echo;
pub mod limits;
