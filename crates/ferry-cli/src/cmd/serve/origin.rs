//! The Origin allow-list of `ferry serve` (`--allow-origin`): the library's policy, which
//! compares origins in their serialized form (see `ferry::OriginPolicy`).

pub use ferry::OriginPolicy as Policy;
