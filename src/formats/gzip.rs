//! gzip, for compressed scrapes: one member of every part in turn.
//!
//! Prometheus asks for gzip; `prometheus_client` compresses at level 9, whose
//! time dwarfs the rendering's. zlib-rs (a Rust port of zlib-ng) at level 2
//! compresses an exposition to about the size zlib's level 1 gives, in less
//! than half its time (docs/performance.md).

use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;

/// The level of compressed scrapes.
pub const LEVEL: u32 = 2;

/// A gzip member's header (RFC 1952): deflate, no name or comment, no
/// modification time, no extra flags, operating system unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// One gzip member, written a part at a time.
///
/// The member is framed here around a raw deflate stream: its CRC-32 comes
/// from `crc32fast`, which uses the processor's carry-less multiply where
/// there is one (zlib-rs computes it in portable code without the
/// instruction enabled at build time, a tenth of the whole time).
pub struct Gzip {
    encoder: DeflateEncoder<Vec<u8>>,
    crc: crc32fast::Hasher,
    size: usize,
}

impl Gzip {
    /// An empty member, to compress at `level` (0 to 9) into a body of
    /// about `capacity` bytes.
    pub fn new(level: u32, capacity: usize) -> Self {
        let mut body = Vec::with_capacity(capacity + HEADER.len() + 8);
        body.extend_from_slice(&HEADER);
        Gzip {
            encoder: DeflateEncoder::new(body, Compression::new(level.min(9))),
            crc: crc32fast::Hasher::new(),
            size: 0,
        }
    }

    /// Compresses `part` after the parts before it.
    pub fn write(&mut self, part: &[u8]) -> std::io::Result<()> {
        self.crc.update(part);
        self.size += part.len();
        self.encoder.write_all(part)
    }

    /// The whole member.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        let mut body = self.encoder.finish()?;
        body.extend_from_slice(&self.crc.finalize().to_le_bytes());
        // The size modulo 2^32, as the format keeps it.
        body.extend_from_slice(&(self.size as u32).to_le_bytes());
        Ok(body)
    }
}

/// `parts`, one after the other, as one gzip member at `level` (0 to 9).
pub fn gzip(parts: &[&[u8]], level: u32) -> std::io::Result<Vec<u8>> {
    let size: usize = parts.iter().map(|part| part.len()).sum();
    // Expositions shrink about twenty-fold: an eighth is room enough at once.
    let mut member = Gzip::new(level, size / 8);
    for part in parts {
        member.write(part)?;
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
        for level in [0, 1, LEVEL, 9] {
            let body = gzip(&parts, level).unwrap();
            assert_eq!(&body[..2], [0x1f, 0x8b], "a gzip member");
            let mut text = String::new();
            MultiGzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .unwrap();
            assert_eq!(text, "# HELP a\na 1.0\n# EOF\n");
        }
    }
}
