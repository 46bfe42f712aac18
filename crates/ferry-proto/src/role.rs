//! Which end of a connection this is: the one fact about a connection that the frame codec,
//! the extensions and the state machine all need.

/// Which end of the connection this is. It decides masking (§5.1) and who closes TCP (§7.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the opening handshake request. Masks every frame it sends.
    Client,
    /// The end that accepted it. Sends unmasked frames and closes the TCP connection first.
    Server,
}
