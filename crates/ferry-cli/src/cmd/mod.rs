//! One module per subcommand.

pub mod autobahn;
pub mod bench;
pub mod bridge;
pub mod connect;
pub mod demo;
pub mod echo;
pub mod forward;
pub mod limits;
pub mod listen;
pub mod serve;
pub mod token;
