//! gzip, for compressed scrapes: one member of every part in turn.
//!
//! Prometheus asks for gzip; `prometheus_client` compresses at level 9, whose
//! time dwarfs the rendering's. The member here is framed (RFC 1952) around
//! the crate's own deflate ([`crate::formats::deflate`]), which compresses an
//! exposition to about the size zlib's level 1 gives, in a fraction of its
//! time (docs/performance.md).
//!
//! `GATEWAY_METRICS_GZIP=zlib` (or `zlib:N`, levels 1 to 9) makes a process
//! compress with zlib-rs instead (through `flate2`), read once when the first
//! member is made: should the crate's deflate ever misbehave in the field,
//! the way around it is a setting, not a release.

use std::io::Write;
use std::sync::OnceLock;

use flate2::write::GzEncoder;

use crate::formats::deflate::Deflate;

/// The environment variable that chooses the compressor.
pub const COMPRESSOR_VARIABLE: &str = "GATEWAY_METRICS_GZIP";

/// Which deflate a gzip member is compressed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    /// The crate's own ([`crate::formats::deflate`]).
    Builtin,
    /// zlib-rs at this level (1 to 9).
    Zlib(u32),
}

impl Compressor {
    /// The compressor `setting` names: `builtin` (or nothing), `zlib` (level
    /// 1) or `zlib:N`; otherwise why not.
    pub fn named(setting: &str) -> Result<Self, String> {
        match setting.trim() {
            "" | "builtin" => Ok(Compressor::Builtin),
            "zlib" => Ok(Compressor::Zlib(1)),
            other => other
                .strip_prefix("zlib:")
                .and_then(|level| level.parse::<u32>().ok())
                .filter(|level| (1..=9).contains(level))
                .map(Compressor::Zlib)
                .ok_or_else(|| {
                    format!(
                        "{COMPRESSOR_VARIABLE}={other:?} is not builtin, zlib or zlib:1 to \
                         zlib:9: compressing with the builtin deflate"
                    )
                }),
        }
    }

    /// This process's compressor, from [`COMPRESSOR_VARIABLE`] (read once),
    /// and why the setting was not taken, if it was not.
    pub fn of_process() -> (Self, Option<&'static str>) {
        static CHOSEN: OnceLock<(Compressor, Option<String>)> = OnceLock::new();
        let (compressor, problem) = CHOSEN.get_or_init(|| {
            let setting = std::env::var(COMPRESSOR_VARIABLE).unwrap_or_default();
            match Compressor::named(&setting) {
                Ok(compressor) => (compressor, None),
                Err(problem) => (Compressor::Builtin, Some(problem)),
            }
        });
        (*compressor, problem.as_deref())
    }
}

/// A gzip member's header (RFC 1952): deflate, no name or comment, no
/// modification time, no extra flags, operating system unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// One gzip member, written a part at a time.
///
/// With the builtin deflate, its CRC-32 comes from `crc32fast`, which uses
/// the processor's carry-less multiply where there is one.
// The builtin variant, every scrape's, is the large one: it stays inline, the
// rare zlib-rs one is boxed.
#[allow(clippy::large_enum_variant)]
pub enum Gzip {
    /// The crate's deflate, framed here.
    Builtin {
        /// The deflate stream, after the header.
        deflate: Deflate,
        /// The CRC-32 of the bytes written so far.
        crc: crc32fast::Hasher,
        /// How many bytes were written.
        size: usize,
    },
    /// zlib-rs's, framed by `flate2` (boxed: the rare case need not make the
    /// common one larger).
    Zlib(Box<GzEncoder<Vec<u8>>>),
}

impl Gzip {
    /// An empty member, into a body of about `capacity` bytes, compressed as
    /// the process's setting says.
    pub fn new(capacity: usize) -> Self {
        Gzip::with(Compressor::of_process().0, capacity)
    }

    /// An empty member compressed by `compressor`.
    pub fn with(compressor: Compressor, capacity: usize) -> Self {
        match compressor {
            Compressor::Builtin => {
                let mut body = Vec::with_capacity(capacity + HEADER.len() + 8);
                body.extend_from_slice(&HEADER);
                Gzip::Builtin {
                    deflate: Deflate::after(body),
                    crc: crc32fast::Hasher::new(),
                    size: 0,
                }
            }
            Compressor::Zlib(level) => Gzip::Zlib(Box::new(GzEncoder::new(
                Vec::with_capacity(capacity),
                flate2::Compression::new(level),
            ))),
        }
    }

    /// Compresses `part` after the parts before it.
    pub fn write(&mut self, part: &[u8]) {
        match self {
            Gzip::Builtin { deflate, crc, size } => {
                crc.update(part);
                *size += part.len();
                deflate.write(part);
            }
            // Writing into a `Vec` cannot fail.
            Gzip::Zlib(encoder) => encoder.write_all(part).unwrap_or(()),
        }
    }

    /// The whole member.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Gzip::Builtin { deflate, crc, size } => {
                let mut body = deflate.finish();
                body.extend_from_slice(&crc.finalize().to_le_bytes());
                // The size modulo 2^32, as the format keeps it.
                body.extend_from_slice(&(size as u32).to_le_bytes());
                body
            }
            Gzip::Zlib(encoder) => encoder.finish().unwrap_or_default(),
        }
    }
}

/// `parts`, one after the other, as one gzip member, compressed as the
/// process's setting says.
pub fn gzip(parts: &[&[u8]]) -> Vec<u8> {
    gzip_with(Compressor::of_process().0, parts)
}

/// `parts`, one after the other, as one gzip member compressed by `compressor`.
pub fn gzip_with(compressor: Compressor, parts: &[&[u8]]) -> Vec<u8> {
    let size: usize = parts.iter().map(|part| part.len()).sum();
    // Expositions shrink about twenty-fold: an eighth is room enough at once.
    let mut member = Gzip::with(compressor, size / 8);
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
    fn parts_come_back_joined_from_either_compressor() {
        let parts: [&[u8]; 3] = [b"# HELP a\n", b"", b"a 1.0\n# EOF\n"];
        for compressor in [
            Compressor::Builtin,
            Compressor::Zlib(1),
            Compressor::Zlib(9),
        ] {
            let body = gzip_with(compressor, &parts);
            assert_eq!(&body[..2], [0x1f, 0x8b], "a gzip member");
            let mut text = String::new();
            MultiGzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .unwrap();
            assert_eq!(text, "# HELP a\na 1.0\n# EOF\n");
            let mut empty = Vec::new();
            MultiGzDecoder::new(&gzip_with(compressor, &[])[..])
                .read_to_end(&mut empty)
                .unwrap();
            assert!(empty.is_empty());
        }
    }

    #[test]
    fn the_setting_names_a_compressor_or_says_why_not() {
        assert_eq!(Compressor::named(""), Ok(Compressor::Builtin));
        assert_eq!(Compressor::named("builtin"), Ok(Compressor::Builtin));
        assert_eq!(Compressor::named("zlib"), Ok(Compressor::Zlib(1)));
        assert_eq!(Compressor::named(" zlib:6 "), Ok(Compressor::Zlib(6)));
        for bad in ["zlib:0", "zlib:10", "gzip", "zlib:x"] {
            assert!(Compressor::named(bad)
                .unwrap_err()
                .contains(COMPRESSOR_VARIABLE));
        }
    }
}
