//! gzip, for compressed scrapes: one member of every part in turn.
//!
//! Prometheus asks for gzip; `prometheus_client` compresses at level 9, whose
//! time dwarfs the rendering's. zlib-rs (a Rust port of zlib-ng) at level 2
//! compresses an exposition to about the size zlib's level 1 gives, in about
//! 0.6 of its time (docs/performance.md).

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// The level of compressed scrapes.
pub const LEVEL: u32 = 2;

/// `parts`, one after the other, as one gzip member at `level` (0 to 9).
pub fn gzip(parts: &[&[u8]], level: u32) -> std::io::Result<Vec<u8>> {
    let size: usize = parts.iter().map(|part| part.len()).sum();
    // Expositions shrink about twenty-fold: an eighth is room enough at once.
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(size / 8 + 64),
        Compression::new(level.min(9)),
    );
    for part in parts {
        encoder.write_all(part)?;
    }
    encoder.finish()
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
