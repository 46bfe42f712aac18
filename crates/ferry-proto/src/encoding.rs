//! Frame encodings: the settings that alone decide the bytes a server connection writes for a
//! message, so connections with equal encodings can share one encoded frame
//! ([`crate::prepared`]). Its own file because the extensions produce them and the fan-out
//! consumes them.

/// How a connection encodes outgoing messages when that depends on nothing but its settings:
/// connections with equal encodings write identical bytes for the same message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameEncoding {
    /// A server frame, uncompressed.
    Plain,
    /// A server frame compressed by permessage-deflate without server context takeover.
    Deflate(DeflateEncoding),
}

/// The compressor settings that decide permessage-deflate's output for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeflateEncoding {
    pub(crate) level: i32,
    pub(crate) mem_level: i32,
    pub(crate) window_bits: u8,
    pub(crate) threshold: usize,
}
