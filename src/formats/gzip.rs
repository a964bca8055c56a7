//! gzip, for compressed scrapes: one member of every part in turn.
//!
//! Prometheus asks for gzip; `prometheus_client` compresses at level 9, whose
//! time dwarfs the rendering's. The member here is framed (RFC 1952) around
//! the crate's own deflate ([`crate::formats::deflate`]), which compresses an
//! exposition to about the size zlib's level 1 gives, in a fraction of its
//! time (docs/performance.md).

use crate::formats::deflate::Deflate;

/// A gzip member's header (RFC 1952): deflate, no name or comment, no
/// modification time, no extra flags, operating system unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// One gzip member, written a part at a time.
///
/// Its CRC-32 comes from `crc32fast`, which uses the processor's carry-less
/// multiply where there is one.
pub struct Gzip {
    deflate: Deflate,
    crc: crc32fast::Hasher,
    size: usize,
}

impl Gzip {
    /// An empty member, into a body of about `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let mut body = Vec::with_capacity(capacity + HEADER.len() + 8);
        body.extend_from_slice(&HEADER);
        Gzip {
            deflate: Deflate::after(body),
            crc: crc32fast::Hasher::new(),
            size: 0,
        }
    }

    /// Compresses `part` after the parts before it.
    pub fn write(&mut self, part: &[u8]) {
        self.crc.update(part);
        self.size += part.len();
        self.deflate.write(part);
    }

    /// The whole member.
    pub fn finish(self) -> Vec<u8> {
        let mut body = self.deflate.finish();
        body.extend_from_slice(&self.crc.finalize().to_le_bytes());
        // The size modulo 2^32, as the format keeps it.
        body.extend_from_slice(&(self.size as u32).to_le_bytes());
        body
    }
}

/// `parts`, one after the other, as one gzip member.
pub fn gzip(parts: &[&[u8]]) -> Vec<u8> {
    let size: usize = parts.iter().map(|part| part.len()).sum();
    // Expositions shrink about twenty-fold: an eighth is room enough at once.
    let mut member = Gzip::new(size / 8);
    for part in parts {
        member.write(part);
    }
    member.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    #[test]
    fn parts_come_back_joined() {
        let parts: [&[u8]; 3] = [b"# HELP a\n", b"", b"a 1.0\n# EOF\n"];
        let body = gzip(&parts);
        assert_eq!(&body[..2], [0x1f, 0x8b], "a gzip member");
        let mut text = String::new();
        MultiGzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "# HELP a\na 1.0\n# EOF\n");
        let mut empty = Vec::new();
        MultiGzDecoder::new(&gzip(&[])[..])
            .read_to_end(&mut empty)
            .unwrap();
        assert!(empty.is_empty());
    }
}
