//! One module per subcommand.

pub mod autobahn;
pub mod bench;
pub mod bridge;
pub mod echo;
pub mod limits;
pub mod serve;
