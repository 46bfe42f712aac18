//! A request's target and header fields in one buffer: the path, then names and values back to
//! back, with their spans.
//!
//! A handshake's request has a handful of headers, looked up a few times each by
//! case-insensitive name. Owning each as its own `String` and `Vec<u8>` cost two allocations
//! per header, the largest part of a handshake's allocations; here a whole request costs two.

/// Header fields in arrival order. Names are kept as sent; lookups ignore ASCII case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Headers {
    /// The path, then each field's name and value.
    bytes: Vec<u8>,
    /// Where the path ends (it starts the buffer).
    path_end: u32,
    /// For each field: where its name starts, where its value starts, where its value ends.
    fields: Vec<(u32, u32, u32)>,
}

impl Headers {
    /// The request target `path`, with room for `fields` fields of `bytes` bytes in all (the
    /// path's included), so filling it allocates twice. A path too long for the request's
    /// bound (`u32::MAX`) is dropped, as an overlong field is.
    pub(crate) fn with_path(path: &str, bytes: usize, fields: usize) -> Headers {
        let mut buf = Vec::with_capacity(bytes.max(path.len()));
        let path_end = u32::try_from(path.len()).unwrap_or(0);
        buf.extend_from_slice(path.as_bytes().get(..path_end as usize).unwrap_or_default());
        Headers {
            bytes: buf,
            path_end,
            fields: Vec::with_capacity(fields),
        }
    }

    /// The request target, as given.
    pub(crate) fn path(&self) -> &str {
        // Written from a `&str` in `with_path`, whole.
        let path = self.bytes.get(..self.path_end as usize).unwrap_or_default();
        std::str::from_utf8(path).unwrap_or_default()
    }

    /// Appends a field. A request is bounded by `Limits::max_handshake_bytes` (or by the HTTP/2
    /// stack's header list limit), far below `u32::MAX`; past it the field is dropped.
    pub(crate) fn push(&mut self, name: &str, value: &[u8]) {
        let start = self.bytes.len();
        let Some(end) = start
            .checked_add(name.len())
            .and_then(|n| n.checked_add(value.len()))
            .filter(|&end| u32::try_from(end).is_ok())
        else {
            return;
        };
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.extend_from_slice(value);
        // Each fits: `end` does, and the others are below it.
        let span = |at: usize| u32::try_from(at).unwrap_or(u32::MAX);
        self.fields
            .push((span(start), span(start + name.len()), span(end)));
    }

    /// Every field, in order. Names are ASCII tokens (httparse checks them, and HTTP/2 names
    /// are lowercase tokens), so a name that is not UTF-8 cannot occur; it would read as "".
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.raw()
            .map(|(name, value)| (std::str::from_utf8(name).unwrap_or_default(), value))
    }

    /// Every field as bytes: what lookups compare, without checking names' UTF-8 each time.
    pub(crate) fn raw(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|&(name, value, end)| {
            let (name, value, end) = (name as usize, value as usize, end as usize);
            (
                self.bytes.get(name..value).unwrap_or_default(),
                self.bytes.get(value..end).unwrap_or_default(),
            )
        })
    }

    /// The values of every field called `name` (any case), in order.
    pub(crate) fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.raw()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name` (any case).
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.raw()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

impl Headers {
    /// The path and the fields of an HTTP stack's own header list (hyper's `HeaderMap`, a
    /// `Vec` of pairs), copied once into one buffer.
    pub(crate) fn collect<N, V>(path: &str, pairs: impl IntoIterator<Item = (N, V)>) -> Headers
    where
        N: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let pairs = pairs.into_iter();
        let mut headers = Headers::with_path(path, path.len() + 256, pairs.size_hint().0);
        for (name, value) in pairs {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_case_and_bytes() {
        let mut headers = Headers::with_path("/a?b", 64, 4);
        headers.push("Host", b"example.com");
        headers.push("X-Empty", b"");
        headers.push("connection", b"keep-alive");
        headers.push("Connection", b"Upgrade");
        assert_eq!(headers.path(), "/a?b");
        let all: Vec<(&str, &[u8])> = headers.iter().collect();
        assert_eq!(
            all,
            [
                ("Host", b"example.com".as_slice()),
                ("X-Empty", b"".as_slice()),
                ("connection", b"keep-alive".as_slice()),
                ("Connection", b"Upgrade".as_slice()),
            ]
        );
        assert_eq!(headers.get("HOST"), Some(b"example.com".as_slice()));
        assert_eq!(headers.get("x-empty"), Some(b"".as_slice()));
        assert_eq!(headers.get("origin"), None);
        let connection: Vec<&[u8]> = headers.all("CONNECTION").collect();
        assert_eq!(
            connection,
            [b"keep-alive".as_slice(), b"Upgrade".as_slice()]
        );
    }

    #[test]
    fn pairs_convert_in_order() {
        let pairs = vec![
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"22".to_vec()),
        ];
        let headers = Headers::collect("/x", pairs);
        assert_eq!(headers.path(), "/x");
        let all: Vec<(&str, &[u8])> = headers.iter().collect();
        assert_eq!(all, [("a", b"1".as_slice()), ("b", b"22".as_slice())]);
    }
}
